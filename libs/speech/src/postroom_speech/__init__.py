"""Voicemail audio for Postroom: decode, resample, segment, transcribe, score."""
