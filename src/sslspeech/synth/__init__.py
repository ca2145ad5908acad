"""sslspeech.synth."""
