"""sslspeech.units."""
