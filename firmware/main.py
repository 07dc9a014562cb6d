"""Entry point on the board (and under the unix port): start the board service.

Holds no logic; everything lives in app.py so it can be compiled to .mpy."""

__import__("slots").boot()  # the slot to import from (OTA), before any of it is imported
import app

app.main()
