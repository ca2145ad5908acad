"""sslspeech.launch."""
