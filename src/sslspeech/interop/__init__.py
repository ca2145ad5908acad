"""sslspeech.interop."""
