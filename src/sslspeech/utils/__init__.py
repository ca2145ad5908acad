"""Small shared helpers: atomic files, safetensors I/O, progress bars."""
