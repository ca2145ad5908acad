"""sslspeech.features."""
