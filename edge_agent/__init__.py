"""Camera node agent: frames -> detections -> tracks -> events -> MQTT uplink.

Importing the package must never import Pi-only libraries (picamera2, lgpio)."""

__version__ = "0.1.0"
