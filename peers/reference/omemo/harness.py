"""An independent OMEMO device for Jabberwock's interop tier: python-omemo with the twomemo
backend (OMEMO 2) or the oldmemo backend (OMEMO 0.3), pip: omemo, twomemo[xml], oldmemo[xml],
driven over stdin/stdout with one JSON object per line.

Commands (each answered by one JSON line; errors as {"error": "..."}):
  {"cmd": "init", "jid": J, "version": "twomemo"|"oldmemo"}  -> {"device_id", "devicelist", "bundle"}
  {"cmd": "peer", "jid": J, "devicelist": X, "bundles": {id: X}}  -> {}
  {"cmd": "encrypt", "to": J, "body": B}           -> {"encrypted": X}
  {"cmd": "decrypt", "from": J, "encrypted": X}    -> {"body": B or null, "outbox": [{"to": J, "encrypted": X}]}

X is the XML of a device list, <bundle/> or <encrypted/> element of the chosen version's
namespace. OMEMO 2 messages are wrapped in an XEP-0420 SCE envelope here, since python-omemo
encrypts opaque bytes; OMEMO 0.3 messages carry the body text as is.
Trust is blind (every key trusted), as in the Rust engine's default policy.
"""

import asyncio
import enum
import json
import secrets
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, FrozenSet, Optional

import omemo
from omemo.storage import Just, Maybe, Nothing, Storage
import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree

# The backend module of the version in use ("twomemo" or "oldmemo"), set by "init".
VERSION: Dict[str, Any] = {}
SCE = "urn:xmpp:sce:1"
CLIENT = "jabber:client"


class MemoryStorage(Storage):
    def __init__(self) -> None:
        super().__init__()
        self.data: Dict[str, Any] = {}

    async def _load(self, key: str) -> Maybe[Any]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: Any) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class Trust(enum.Enum):
    TRUSTED = "trusted"


PEP_DEVICES: Dict[str, Dict[int, Optional[str]]] = {}
PEP_BUNDLES: Dict[tuple, Any] = {}
OUTBOX: list = []
OWN: Dict[str, Any] = {}


class Manager(omemo.SessionManager):
    @staticmethod
    async def _upload_bundle(bundle: omemo.Bundle) -> None:
        OWN["bundle"] = bundle

    @staticmethod
    async def _download_bundle(namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:
        try:
            return PEP_BUNDLES[(bare_jid, device_id)]
        except KeyError as e:
            raise omemo.BundleDownloadFailed(f"no bundle for {bare_jid}/{device_id}") from e

    @staticmethod
    async def _delete_bundle(namespace: str, device_id: int) -> None:
        pass

    @staticmethod
    async def _upload_device_list(namespace: str, device_list: Dict[int, Optional[str]]) -> None:
        OWN["devicelist"] = device_list

    @staticmethod
    async def _download_device_list(namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:
        if bare_jid == OWN.get("jid"):
            return OWN.get("devicelist", {})
        return PEP_DEVICES.get(bare_jid, {})

    async def _evaluate_custom_trust_level(self, device: omemo.DeviceInformation) -> omemo.TrustLevel:
        return omemo.TrustLevel.TRUSTED

    async def _make_trust_decision(self, undecided: FrozenSet[omemo.DeviceInformation], identifier: Optional[str]) -> None:
        for device in undecided:
            await self.set_trust(device.bare_jid, device.identity_key, Trust.TRUSTED.value)

    @staticmethod
    async def _send_message(message: omemo.Message, bare_jid: str) -> None:
        OUTBOX.append({"to": bare_jid, "encrypted": xml(etree().serialize_message(message))})


def etree() -> Any:
    return VERSION["module"].etree


def legacy() -> bool:
    return VERSION["module"] is oldmemo


def xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def envelope(body: str, to: str, sender: str) -> bytes:
    env = ET.Element(f"{{{SCE}}}envelope")
    content = ET.SubElement(env, f"{{{SCE}}}content")
    ET.SubElement(content, f"{{{CLIENT}}}body").text = body
    ET.SubElement(env, f"{{{SCE}}}rpad").text = secrets.token_urlsafe(secrets.randbelow(40) + 1)
    ET.SubElement(env, f"{{{SCE}}}time", stamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767225600)))
    ET.SubElement(env, f"{{{SCE}}}to", jid=to)
    ET.SubElement(env, f"{{{SCE}}}from", jid=sender)
    return ET.tostring(env, encoding="utf-8")


def unwrap(plaintext: bytes, sender: str) -> str:
    env = ET.fromstring(plaintext)
    if env.tag != f"{{{SCE}}}envelope":
        raise ValueError("not an SCE envelope")
    frm = env.find(f"{{{SCE}}}from")
    if frm is not None and frm.get("jid") != sender:
        raise ValueError(f"SCE from {frm.get('jid')} is not {sender}")
    body = env.find(f"{{{SCE}}}content/{{{CLIENT}}}body")
    return "" if body is None or body.text is None else body.text


async def handle(req: Dict[str, Any], state: Dict[str, Any]) -> Dict[str, Any]:
    cmd = req["cmd"]
    if cmd == "init":
        OWN["jid"] = req["jid"]
        module = {"twomemo": twomemo, "oldmemo": oldmemo}[req.get("version", "twomemo")]
        VERSION["module"] = module
        backend = twomemo.Twomemo if module is twomemo else oldmemo.Oldmemo
        storage = MemoryStorage()
        manager = await Manager.create([backend(storage)], storage, req["jid"], None, Trust.TRUSTED.value)
        state["manager"] = manager
        info = await manager.get_own_device_information()
        device_id = info[0].device_id
        return {
            "device_id": device_id,
            "devicelist": xml(etree().serialize_device_list(OWN["devicelist"])),
            "bundle": xml(etree().serialize_bundle(OWN["bundle"])),
        }
    manager = state["manager"]
    if cmd == "peer":
        PEP_DEVICES[req["jid"]] = etree().parse_device_list(ET.fromstring(req["devicelist"]))
        for device_id, bundle in req["bundles"].items():
            PEP_BUNDLES[(req["jid"], int(device_id))] = etree().parse_bundle(
                ET.fromstring(bundle), req["jid"], int(device_id)
            )
        await manager.refresh_device_lists(req["jid"])
        return {}
    if cmd == "encrypt":
        ns = oldmemo.oldmemo.NAMESPACE if legacy() else twomemo.twomemo.NAMESPACE
        plaintext = req["body"].encode("utf-8") if legacy() else envelope(req["body"], req["to"], OWN["jid"])
        messages, errors = await manager.encrypt(frozenset([req["to"]]), {ns: plaintext})
        if errors:
            return {"error": f"encryption errors: {errors}"}
        (message,) = list(messages.keys())
        return {"encrypted": xml(etree().serialize_message(message))}
    if cmd == "decrypt":
        OUTBOX.clear()
        element = ET.fromstring(req["encrypted"])
        if legacy():
            message = await oldmemo.etree.parse_message(element, req["from"], OWN["jid"], manager)
        else:
            message = twomemo.etree.parse_message(element, req["from"])
        plaintext, _device, _key = await manager.decrypt(message)
        if plaintext is None:
            body = None
        elif legacy():
            body = plaintext.decode("utf-8")
        else:
            body = unwrap(plaintext, req["from"])
        return {"body": body, "outbox": list(OUTBOX)}
    return {"error": f"unknown command {cmd}"}


def main() -> None:
    loop = asyncio.new_event_loop()
    state: Dict[str, Any] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = loop.run_until_complete(handle(json.loads(line), state))
        except Exception as e:  # reported to the Rust side, which fails the test
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


main()
