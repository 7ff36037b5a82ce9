"""Trained models shipped with vqcodec."""
