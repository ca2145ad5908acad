"""sslspeech.data."""
