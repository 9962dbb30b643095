"""The floor: the least work a step can do, with asyncssh on plain asyncio.

Per environment (each its own SSH connection, all environments concurrent), per step
(sequential within an environment), exactly what chaosrun's step has to do and nothing
else: no trio, no bridge, no audit log, no hash check, no process-group bookkeeping:

    listen   an asyncio server on 127.0.0.1 (``--bind``), ephemeral port, per step
    copy     the module binary over SFTP (one SFTP session per connection) to a random path
    exec     one exec channel: "PATH; rm -f PATH" with the step config (chaosrun.run.wire.step_config)
             on stdin, then EOF
    collect  speak the callback protocol, version 2 (server hello, the binary's X25519 key,
             session keys, hello proof, read hello/log/result frames with
             chaosrun.run.wire.open_frame, send the sealed ack), close the listener
    delete   the ``rm -f`` above (the binary also unlinks itself when it starts); wait for
             the channel's exit status

Usage (normally run by bench_runtime.py, in its own process):

    .venv/bin/python bench/floor_asyncssh.py --host 127.0.0.1 --port P --user root \
        --identity KEY --known-hosts KH --binary PATH --envs 20 --steps 3 [--tmp-dir /tmp]

Prints one JSON line: {"seconds": run wall time, "cpu": CPU seconds of the run, "ok": bool,
"steps": n, "maxrss_kb": n}.
``seconds`` runs from just before the first connection to the last connection closed
(interpreter start and imports excluded, as for chaosrun's "run" figure).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import resource
import secrets
import shlex
import string
import sys
import time
from pathlib import Path

import asyncssh
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

# Only the protocol helpers: nothing here runs trio.
from chaosrun.run.wire import (
    C2M,
    CHALLENGE_SIZE,
    M2C,
    MAGIC,
    PUBLIC_KEY_SIZE,
    StepSecret,
    hello_proof,
    open_frame,
    seal,
    session_keys,
    step_config,
    transcript_sha256,
)

ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
RUN_ID = "floor-run"


def random_name() -> str:
    alphabet = string.ascii_letters + string.digits
    return "tmp." + "".join(secrets.choice(alphabet) for _ in range(10))


async def serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: StepSecret,
    step_id: str,
    done: asyncio.Future[dict],
) -> None:
    """The monitor's side of one callback: server hello, the binary's key, session keys,
    the hello's proof, frames until the result, ack."""
    try:
        challenge = secrets.token_bytes(CHALLENGE_SIZE)
        writer.write(MAGIC + challenge)
        binary_key = await reader.readexactly(PUBLIC_KEY_SIZE)
        shared = secret.private_key.exchange(X25519PublicKey.from_public_bytes(binary_key))
        c2m, m2c = session_keys(shared, challenge, secret.monitor_key, binary_key)
        seq = 0
        while True:
            length = int.from_bytes(await reader.readexactly(4), "big")
            message = open_frame(c2m, challenge, C2M, seq, await reader.readexactly(length))
            if seq == 0:
                transcript = transcript_sha256(challenge, secret.monitor_key, binary_key, RUN_ID, step_id)
                if not hmac.compare_digest(str(message.get("proof")), hello_proof(secret.token, transcript)):
                    raise ValueError("wrong token")
            if message["t"] == "result":
                break
            seq += 1
        writer.write(seal(m2c, challenge, M2C, 0, {"t": "ack"}, False))
        await writer.drain()
        if not done.done():
            done.set_result(message)
    except Exception as exc:  # noqa: BLE001 - a floor step that fails is reported as not ok
        if not done.done():
            done.set_exception(exc)
    finally:
        writer.close()


async def one_step(
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    data: bytes,
    tmp_dir: str,
    step: int,
    max_requests: int = -1,
    bind: str = "127.0.0.1",
) -> bool:
    secret = StepSecret.new()
    done: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: serve_one(r, w, secret, f"s{step}", done), bind, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        path = f"{tmp_dir}/{random_name()}"
        async with sftp.open(
            path, "wb", asyncssh.SFTPAttrs(permissions=0o700), encoding=None, max_requests=max_requests
        ) as f:
            await f.write(data, 0)
        config = step_config(
            monitor=f"{bind}:{port}",
            secret=secret,
            run_id=RUN_ID,
            step_id=f"s{step}",
            module="file_exists",
            params={"path": "/tmp"},
            timeout=60,
        )
        q = shlex.quote(path)
        process = await conn.create_process(f"{q}; rm -f {q}", input=config, encoding=None)
        result = await asyncio.wait_for(done, 30)
        await process.wait_closed()
        return bool(result.get("ok")) and process.exit_status == 0
    finally:
        server.close()


async def one_env(args: argparse.Namespace, data: bytes) -> bool:
    async with (
        asyncssh.connect(
            args.host,
            args.port,
            username=args.user,
            client_keys=[args.identity],
            known_hosts=args.known_hosts,
            config=None,
            agent_path=None,
            preferred_auth="publickey",
            encryption_algs=ENCRYPTION_ALGS,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        ok = True
        for step in range(1, args.steps + 1):
            ok = await one_step(conn, sftp, data, args.tmp_dir, step, args.max_requests, args.bind) and ok
        return ok


async def main_async(args: argparse.Namespace) -> dict:
    data = Path(args.binary).read_bytes()
    at_once = asyncio.Semaphore(args.parallel or args.envs)

    async def env_in_turn() -> bool:
        async with at_once:
            return await one_env(args, data)

    cpu = time.process_time()
    started = time.perf_counter()
    results = await asyncio.gather(*(env_in_turn() for _ in range(args.envs)), return_exceptions=True)
    seconds = time.perf_counter() - started
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "ok": all(r is True for r in results),
        "steps": args.envs * args.steps,
        "errors": errors[:3],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="root")
    p.add_argument("--identity", required=True)
    p.add_argument("--known-hosts", required=True)
    p.add_argument("--binary", required=True, help="the module binary to deploy (e.g. file_exists)")
    p.add_argument("--tmp-dir", default="/tmp")
    p.add_argument("--bind", default="127.0.0.1", help="address the callback listener binds, and the binary dials")
    p.add_argument("--envs", type=int, default=1)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--parallel", type=int, default=0, help="environments at once (default: all)")
    p.add_argument(
        "--max-requests",
        type=int,
        default=-1,
        help="SFTP write requests in flight per upload (default: asyncssh's, up to 128; chaosrun uses 4)",
    )
    args = p.parse_args()
    out = asyncio.run(main_async(args))
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
