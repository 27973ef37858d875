"""Fakes of the outside services the gateway delivers to, each answering as the real service does.

Every fake is a real aiohttp server on 127.0.0.1. It checks requests the way its service does
(credentials, body shape, sizes), keeps the service's rate limits on an injectable clock and
answers them with the service's own rate-limit reply, and can be told to answer the next
requests otherwise (`answer_next`) to play the service's other errors.
"""
