"""Queue endpoints: handing a call to its contact-centre queue with what the IVR learned attached.

- :mod:`ivr.handoff.config`: ``configs/queues.yaml`` (the only targets a call can ever be handed to);
- :mod:`ivr.handoff.data`: X-IVR-* headers, RFC 7433 User-to-User, Refer-To URI headers, escaping;
- :mod:`ivr.handoff.service`: :class:`~ivr.handoff.service.QueueHandoff`, the flow engine's ``Handoff`` in the
  daemon: blind transfer by REFER, bridging (B2BUA) through :class:`~ivr.media.bridge.MediaBridge`, or REFER then
  bridge; the HTTP POST of the context to the ACD; the outcome for the call's trace and record.
"""
