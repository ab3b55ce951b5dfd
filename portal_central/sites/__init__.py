"""Sites' live connections to central: the WebSocket endpoint and the transport over it."""
