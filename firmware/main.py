"""Entry point on the board (and under the unix port): start the board service.

Holds no logic; everything lives in app.py so it can be compiled to .mpy."""

import app

app.main()
