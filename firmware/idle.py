"""The sensor of a board in safe mode (app.Board after repeated failed boots): nothing is
read, so nothing here can fail. Loaded only in safe mode."""


class Idle:
    """The sensor of a board in safe mode: nothing is read, so nothing here can fail."""

    def tick(self, now):
        pass

    def due_ms(self, now):
        return 100

    def due_us(self, now):
        return 100000

    def metrics(self, m):
        m["safe_mode"] = True

    def self_test(self):
        return {"sensor": "safe_mode"}, False

    def configure(self, cfg):
        pass

    def calibrate(self):
        return None, "safe mode: no sensor"

    def maybe_sleep(self, board, now):
        pass
