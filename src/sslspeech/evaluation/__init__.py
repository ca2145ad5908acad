"""sslspeech.evaluation."""
