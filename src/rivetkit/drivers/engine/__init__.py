"""Engine mode: host this registry's actors on the Rivet Engine (envoy protocol v8).

Modules: ``envoy`` (the envoy WebSocket client), ``tunnel`` (client traffic the engine's gateway
tunnels to us, turned into ASGI calls on the same actor router as embedded mode), ``sqlite`` (each
actor's database, stored by the engine, reached through the page protocol), ``host`` (the actor
host: engine commands drive the same runtime as embedded mode).
"""
