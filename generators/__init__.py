"""Event sources: XES replay, multi-organization split, Petri-net simulation."""
