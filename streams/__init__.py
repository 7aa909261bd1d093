"""The Faust stream processors: pairing, flag log writer, dead letters, health windows."""
