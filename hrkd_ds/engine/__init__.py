"""Engines: process group, DeepSpeed student and frozen ZeRO-3 teacher, checkpoints, the loop."""
