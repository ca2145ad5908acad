"""sslspeech.training."""
