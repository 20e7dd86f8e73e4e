"""ivr: an asyncio telephone IVR and call controller."""

__version__ = "0.1.0"
