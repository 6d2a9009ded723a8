"""Exports of a run to other tools: Chrome/Perfetto traces, TensorBoard event files."""
