"""sslspeech.pipeline."""
