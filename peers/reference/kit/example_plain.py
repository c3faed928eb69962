"""The smallest adapter: the `plain` protocol (no encryption) in a few lines of Python, as an
example of the engine protocol (docs/engine-protocol.md) and a test of the kit. Run:
`python3 example_plain.py plain`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jabberwock_adapter as kit  # noqa: E402  (first: it seeds Python's randomness)
from jabberwock_adapter import CLIENT, EngineError, Output, el  # noqa: E402


class Plain(kit.Engine):
    def __init__(self, me: str) -> None:
        self.me = me

    @classmethod
    def create(cls, me, config, rng):
        return cls(me)

    def publish(self, now):
        return Output()

    def going_offline(self, now):
        return Output()

    def presence(self, now):
        return []

    def receive_presence(self, now, stanza):
        return Output()

    def out_of_band(self):
        return []

    def ceremony(self, peer):
        return None

    def identity_marks(self):
        return []

    def peer_marks(self, peer):
        return []

    def owns_part(self, part):
        return False

    def message_id(self, to):
        return None

    def send(self, now, to, body):
        return Output().send(el("message", {"to": to, "type": "chat"}, [el("body", text=body)], xmlns=CLIENT))

    def receive(self, now, stanza):
        message = kit.parse(stanza)
        body = kit.child(message, CLIENT, "body")
        if body is None:
            return Output()
        if len(body):
            raise EngineError("malformed", "the body holds elements", "body")
        return Output().plaintext(message.get("from", ""), body.text or "", "unencrypted")

    def drain(self, now):
        return Output()

    def steal(self, what):
        return Plain(self.me), None


kit.serve(implementation="example-plain", version="1", protocols={"plain": Plain})
