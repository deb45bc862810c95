"""A throwaway PostgreSQL server for tests: initdb into a temp folder, start on a free 127.0.0.1 port,
remove at the end.

    with PostgresServer.start() as server:     # ~1-2 s: initdb, pg_ctl start, createdb
        server.url                             # postgresql+psycopg://postgres@127.0.0.1:PORT/embedlab_test
        server.create_database("other")        # the URL of another fresh database on the same server

The binaries come from the system package (Debian: ``apt-get install postgresql``, which puts them in
/usr/lib/postgresql/<version>/bin, not on PATH). initdb and pg_ctl refuse to run as root, so as root the folder is
given to the ``postgres`` user and both run as that user through ``runuser``; as any other user they run directly.
The server trusts every local connection (a test cluster: no password), fsync is off and the folder is deleted on
stop, so nothing here is fit for data that should survive.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "apt-get install postgresql (Debian/Ubuntu; .ci/run does this)"
SERVER_USER = "postgres"  # the OS user that runs the server when we are root, and the database superuser's name
DATABASE = "embedlab_test"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (or cannot be run from here)."""


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres: $EMBEDLAB_PG_BINDIR, else ``pg_config --bindir``, else the
    newest /usr/lib/postgresql/*/bin, else the folder of an ``initdb`` on PATH."""
    candidates: list[str] = []
    if os.environ.get("EMBEDLAB_PG_BINDIR"):
        candidates.append(os.environ["EMBEDLAB_PG_BINDIR"])
    if shutil.which("pg_config"):  # Debian's comes with libpq-dev and may name a server that is not installed
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for c in candidates:
        if all(os.access(Path(c) / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found (looked in: {', '.join(candidates) or '-'})"
        f"; install them with: {INSTALL_HINT}, or set EMBEDLAB_PG_BINDIR")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable_by_others(folder: Path) -> bool:
    """Whether every folder from / down to ``folder`` may be entered by other users (the server user needs that)."""
    for p in [folder, *folder.parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresServer:
    def __init__(self, bindir: Path, root: Path, port: int, as_user: list[str]):
        self.bindir, self.root, self.port, self._as_user = bindir, root, port, as_user
        self.data = root / "data"
        self.log = root / "server.log"
        self.url = self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, database: str = DATABASE) -> PostgresServer:
        """initdb a new cluster in a temp folder, start it and create ``database``; on any failure nothing is left
        running or on disk, and the error carries the server log."""
        bindir = find_bindir()
        as_user: list[str] = []
        parent = None
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                raise PostgresUnavailable("running as root needs runuser (util-linux) to start PostgreSQL as "
                                          f"user {SERVER_USER!r}: initdb and pg_ctl refuse to run as root")
            try:
                import pwd
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(f"running as root but there is no {SERVER_USER!r} user to run the server as"
                                          f" (the Debian package creates it: {INSTALL_HINT})") from None
            as_user = ["runuser", "-u", SERVER_USER, "--"]
            if not _reachable_by_others(Path(tempfile.gettempdir())):
                parent = "/tmp"  # e.g. TMPDIR under /root: the postgres user could not reach the cluster
        root = Path(tempfile.mkdtemp(prefix="embedlab-pg-", dir=parent))
        server = None
        try:
            if as_user:
                os.chown(root, owner.pw_uid, owner.pw_gid)
            for attempt in range(3):  # the free port may be taken between free_port() and the server's bind
                server = cls(bindir, root, free_port(), as_user)
                try:
                    server._initdb_and_start(first=attempt == 0)
                    break
                except RuntimeError:
                    if attempt == 2 or "could not bind" not in server._log_tail():
                        raise
            server._createdb(database)
            return server
        except BaseException:
            if server is not None:
                server.stop()
            else:
                shutil.rmtree(root, ignore_errors=True)
            raise

    def _run(self, args: list[str], what: str, as_server_user: bool = True, timeout: float = 60) -> None:
        cmd = (self._as_user if as_server_user else []) + args
        # LC_ALL=C: a minimal machine may lack the caller's locale, and initdb would refuse it.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {out.returncode}): {' '.join(cmd)}\n{out.stdout}{out.stderr}"
                               f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n--- server log ---\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def _initdb_and_start(self, first: bool) -> None:
        if first:
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", SERVER_USER, "-A", "trust",
                       "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], "initdb")
        # Written by us (root or not) into a file the server user owns; ownership is kept on rewrite.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",  # not /var/run/postgresql (root's, or absent)
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",  # throwaway data: speed
            "max_connections": "50",
        }
        with open(self.data / "postgresql.auto.conf", "w") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                   "start"], "pg_ctl start")

    def _createdb(self, database: str) -> None:
        createdb = self.bindir / "createdb"
        if createdb.exists():
            self._run([str(createdb), "-h", "127.0.0.1", "-p", str(self.port), "-U", SERVER_USER, database],
                      f"createdb {database}", as_server_user=False)
        else:  # bindir from EMBEDLAB_PG_BINDIR without the client programs
            self.create_database(database)

    def create_database(self, name: str) -> str:
        """Create another empty database on this server; returns its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SERVER_USER} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and delete its folder. Safe to call twice."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t",
                               "30", "stop"], "pg_ctl stop")
                except (RuntimeError, subprocess.SubprocessError, OSError):
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """The fallback when pg_ctl stop fails: SIGQUIT (immediate shutdown) to the postmaster this server started."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
