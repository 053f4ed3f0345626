"""Write receipts.json: the protocol vectors for other implementations (run by hand, never by the tests).

    PYTHONPATH=. python tests/vectors/translog/make_vectors.py

ECDSA signatures are randomised, so running this again changes every signature: the tests verify the stored
file and never regenerate it. The test-only keys are kept in the file and reused when it exists. Each case
says what a verifier must answer: "valid", or the step (fedattest.translog.refusal.Step) it must refuse at.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.translog.hashing import leaf_hash
from fedattest.translog.log import MerkleLog
from fedattest.translog.treehead import SignedTreeHead, TreeHead, log_id_of, sign_tree_head

HERE = Path(__file__).resolve().parent
OUT = HERE / "receipts.json"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in milliseconds
LEAVES = [f"fedattest upload {i}".encode() for i in range(7)]


def _pem_private(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _pem_public(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _keys() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    if OUT.exists():
        keys = json.loads(OUT.read_text())["keys"]
        log = serialization.load_pem_private_key(keys["log"]["test_only_private_pem"].encode(), None)
        other = serialization.load_pem_private_key(keys["other_log"]["test_only_private_pem"].encode(), None)
        p384 = serialization.load_pem_public_key(keys["p384"]["public_pem"].encode())
        assert isinstance(log, ec.EllipticCurvePrivateKey) and isinstance(other, ec.EllipticCurvePrivateKey)
        assert isinstance(p384, ec.EllipticCurvePublicKey)
        return log, other, p384
    return ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP384R1()
    ).public_key()


def main() -> None:
    log_key, other_key, p384 = _keys()
    log = MerkleLog()
    heads: dict[int, SignedTreeHead] = {}
    for i, data in enumerate(LEAVES):
        log.append(data)
        head = TreeHead(log_id_of(log_key.public_key()), log.size, log.root(), T0 + 1000 * (i + 1))
        heads[log.size] = sign_tree_head(head, log_key)

    def receipt(index: int, size: int) -> dict[str, Any]:
        signed = heads[size].to_json()
        return {
            "leaf_index": index,
            "leaf_hash": log.leaf_hash(index).hex(),
            "sth": signed["sth"],
            "sth_signature": signed["sth_signature"],
            "inclusion_proof": [h.hex() for h in log.inclusion_proof(index, size)],
        }

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))

    def flip(hex_text: str) -> str:
        return hex_text[:-1] + format(int(hex_text[-1], 16) ^ 1, "x")

    receipts: list[dict[str, Any]] = []

    def case(name: str, doc: Any, data: bytes, expect: str, key: str = "log") -> None:
        text = doc if isinstance(doc, str) else dumps(doc)
        receipts.append({"name": name, "receipt_json": text, "leaf_data_hex": data.hex(), "key": key, "expect": expect})

    for size in sorted(heads):  # the receipt each upload got, and every entry under the last head
        case(f"upload {size - 1}, receipt at upload", receipt(size - 1, size), LEAVES[size - 1], "valid")
    for index in range(len(LEAVES) - 1):
        case(f"entry {index} under the head of size 7", receipt(index, 7), LEAVES[index], "valid")

    good = receipt(2, 7)
    data = LEAVES[2]
    case("other data than uploaded", good, b"fedattest upload 9", "leaf_hash")
    case("leaf hash of another entry", {**good, "leaf_hash": log.leaf_hash(3).hex()}, data, "leaf_hash")
    case("leaf index moved", {**good, "leaf_index": 3}, data, "inclusion_root")
    case("leaf index beyond the tree", {**good, "leaf_index": 7}, data, "inclusion_index")
    proof = good["inclusion_proof"]
    case("proof hash changed", {**good, "inclusion_proof": [flip(proof[0]), *proof[1:]]}, data, "inclusion_root")
    case("proof hash dropped", {**good, "inclusion_proof": proof[:-1]}, data, "inclusion_too_short")
    case("proof hash added", {**good, "inclusion_proof": [*proof, proof[0]]}, data, "inclusion_too_long")
    case("proof reordered", {**good, "inclusion_proof": proof[::-1]}, data, "inclusion_root")
    sth = good["sth"]
    case("root hash changed after signing", {**good, "sth": {**sth, "root_hash": flip(sth["root_hash"])}}, data, "signature")
    case("tree size changed after signing", {**good, "sth": {**sth, "tree_size": 8}}, data, "signature")
    case("timestamp changed after signing", {**good, "sth": {**sth, "timestamp": sth["timestamp"] + 1}}, data, "signature")
    forged = TreeHead(log_id_of(log_key.public_key()), 7, log.root(), T0 + 7000)
    forged_sig = other_key.sign(forged.signed_message(), ec.ECDSA(hashes.SHA256()))
    case("signed by another key", {**good, "sth_signature": base64.b64encode(forged_sig).decode()}, data, "signature")
    sig = base64.b64decode(good["sth_signature"])
    case("signature truncated", {**good, "sth_signature": base64.b64encode(sig[:-1]).decode()}, data, "signature")
    other_head = sign_tree_head(TreeHead(log_id_of(other_key.public_key()), 7, log.root(), T0 + 7000), other_key).to_json()
    case("head of another log", {**good, **other_head}, data, "log_id")
    case("a P-384 key", good, data, "log_key", key="p384")
    # -- format refusals: a verifier must refuse these before any check
    case("unknown key", {**good, "extra": 1}, data, "format")
    case("missing key", {k: v for k, v in good.items() if k != "leaf_hash"}, data, "format")
    case("unknown key in the head", {**good, "sth": {**sth, "version": 1}}, data, "format")
    case("negative tree size", {**good, "sth": {**sth, "tree_size": -1}}, data, "format")
    case("tree size beyond 2^53 - 1", {**good, "sth": {**sth, "tree_size": 2**53}}, data, "format")
    case("tree size as a float", dumps(good).replace('"tree_size":7', '"tree_size":7.0'), data, "format")
    case("leaf index as a string", {**good, "leaf_index": "2"}, data, "format")
    case("leaf index as a boolean", {**good, "leaf_index": True}, data, "format")
    case("uppercase hex", {**good, "leaf_hash": good["leaf_hash"].upper()}, data, "format")
    case("short hex", {**good, "inclusion_proof": [proof[0][:-2], *proof[1:]]}, data, "format")
    case("signature not base64", {**good, "sth_signature": "not base64!"}, data, "format")
    case("signature base64 without padding", {**good, "sth_signature": good["sth_signature"].rstrip("=")}, data, "format")
    case("duplicate key", dumps(good)[:-1] + ',"leaf_index":3}', data, "format")
    case("not an object", dumps([good]), data, "format")
    case("larger than 16 KiB", dumps(good)[:-1] + ',"pad":"' + "x" * 16384 + '"}', data, "format")

    consistency: list[dict[str, Any]] = []

    def pair(name: str, old: Any, new: Any, proof: list[str], expect: str, *, key: str = "log") -> None:
        consistency.append({"name": name, "old": old, "new": new, "consistency_proof": proof, "key": key, "expect": expect})

    def cproof(m: int, n: int) -> list[str]:
        return [h.hex() for h in log.consistency_proof(m, n)]

    for m, n in [(1, 7), (2, 7), (3, 7), (4, 7), (6, 7), (7, 7), (1, 2), (2, 5), (3, 4)]:
        pair(f"{m} -> {n}", heads[m].to_json(), heads[n].to_json(), cproof(m, n), "valid")
    old3, new7, p37 = heads[3].to_json(), heads[7].to_json(), cproof(3, 7)
    other3 = sign_tree_head(TreeHead(log_id_of(other_key.public_key()), 3, log.root(3), T0 + 3000), other_key).to_json()
    pair("heads of different logs", other3, new7, p37, "different_logs")
    pair("old head's signature changed", {**old3, "sth_signature": heads[4].to_json()["sth_signature"]}, new7, p37, "signature")
    pair("sizes swapped", new7, old3, p37, "head_order")
    earlier7 = sign_tree_head(TreeHead(log_id_of(log_key.public_key()), 7, log.root(7), T0), log_key).to_json()
    pair("later head with an earlier timestamp", old3, earlier7, p37, "head_order")
    pair("proof hash changed", old3, new7, [flip(p37[0]), *p37[1:]], "consistency_old_root")
    pair("last proof hash changed", old3, new7, [*p37[:-1], flip(p37[-1])], "consistency_new_root")
    pair("empty proof", old3, new7, [], "consistency_empty_proof")
    pair("proof hash dropped", old3, new7, p37[:-1], "consistency_too_short")
    pair("proof hash added", old3, new7, [*p37, p37[0]], "consistency_too_long")
    fork7 = sign_tree_head(TreeHead(log_id_of(log_key.public_key()), 7, log.root(6), T0 + 8000), log_key).to_json()
    pair("same size, other root (a fork)", new7, fork7, [], "consistency_same_size")
    empty = sign_tree_head(TreeHead(log_id_of(log_key.public_key()), 0, log.root(0), T0), log_key).to_json()
    pair("from the empty tree", empty, new7, [], "consistency_empty_old")
    pair("a P-384 key", old3, new7, p37, "log_key", key="p384")

    doc = {
        "description": "fedattest translog protocol vectors (docs/translog.md). Each receipt case: parse receipt_json, "
        "verify it with the public key named by 'key' and the upload leaf_data_hex; each consistency case: parse old and "
        "new as signed tree heads and consistency_proof as hashes, verify with the key. 'expect' is 'valid' or the step "
        "that must refuse. Generated once by make_vectors.py; the signatures are randomised, do not regenerate.",
        "sth_label": "fedattest-sth-v1\n",
        "keys": {
            "log": {
                "public_pem": _pem_public(log_key.public_key()),
                "log_id": log_id_of(log_key.public_key()).hex(),
                "test_only_private_pem": _pem_private(log_key),
            },
            "other_log": {
                "public_pem": _pem_public(other_key.public_key()),
                "log_id": log_id_of(other_key.public_key()).hex(),
                "test_only_private_pem": _pem_private(other_key),
            },
            "p384": {"public_pem": _pem_public(p384)},
        },
        "leaves": [{"index": i, "data_hex": d.hex(), "leaf_hash": leaf_hash(d).hex()} for i, d in enumerate(LEAVES)],
        "signed_tree_heads": [
            {
                "signed_sth": heads[n].to_json(),
                "signed_message": heads[n].sth.signed_message().decode(),
                "signed_message_hex": heads[n].sth.signed_message().hex(),
            }
            for n in sorted(heads)
        ],
        "receipts": receipts,
        "consistency": consistency,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
