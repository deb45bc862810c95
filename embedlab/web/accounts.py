"""Web accounts and per-user ownership, in two tables next to the results store (same database, SQLite or PostgreSQL).

    accounts = Accounts.open("sqlite:///embedlab-results.sqlite")   # or Accounts(store.engine)
    admin = accounts.create_user("ada", "a long passphrase", role="admin")
    user = accounts.authenticate("ada", "a long passphrase")        # a User, or None (wrong, unknown or disabled)
    accounts.own("job", job_id, user)                               # the user who launched it owns it
    accounts.require_owner("job", job_id, other)                    # NotFound (404) unless other owns it (or is admin)
    accounts.owned_ids("job", user)                                 # what a list page shows this user

Table ``web_users``: id, username (unique, lower case), password_hash (argon2id, PHC string), role (admin |
researcher | reviewer), active, session_version (raised on a password change or disable: every session signed
before it stops working), created_at. Table ``web_ownership``: (kind, object_id) primary key, owner_id, created_at;
kinds: upload, project, job. The ``web_`` prefix keeps them apart from the store's Alembic-managed tables; they are
created with ``metadata.create_all`` (new tables only: a column added later needs a migration).

Passwords: argon2-cffi's ``PasswordHasher`` (its defaults, argon2id); a hash made with older parameters is replaced at
the next successful login. At least 10 characters, at most 1024 (hashing is deliberately slow; a megabyte password
would make it a denial of service). An unknown user name costs the same hashing time as a wrong password, so login
timing does not reveal which names exist. There is no default account: the first admin comes from
``embedlab users create-admin`` (embedlab/cli/serve.py).

Every query goes through SQLAlchemy with bound parameters. This module knows nothing of HTTP: it raises the errors
of embedlab.web.errors, which the app answers with a status and the CLI prints as one line.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Boolean, ForeignKey, Integer, String, delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ..bench.store import UTCDateTime  # one UTC datetime column type for the store's tables and the web's
from .errors import AccountError, NotFound

log = logging.getLogger("embedlab.web.accounts")

ROLES = ("admin", "researcher", "reviewer")
OWNED_KINDS = ("upload", "project", "job")  # a page group that owns a new kind of object adds it here
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,31}")
MAX_OBJECT_ID = 128


class _Base(DeclarativeBase):
    pass


class _UserRow(_Base):
    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    session_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class _OwnershipRow(_Base):
    __tablename__ = "web_ownership"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(MAX_OBJECT_ID), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("web_users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


metadata = _Base.metadata


@dataclass(frozen=True)
class User:
    """A user as the pages see it (never the password hash)."""

    id: int
    username: str
    role: str
    active: bool
    session_version: int
    created_at: dt.datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict:
        """The JSON the API shows."""
        return {"id": self.id, "username": self.username, "role": self.role, "active": self.active,
                "created_at": self.created_at.isoformat()}


def _user(row: _UserRow) -> User:
    return User(row.id, row.username, row.role, bool(row.active), row.session_version, row.created_at)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def normalise_username(username: str) -> str:
    """The stored form of a user name (lower case, trimmed); AccountError when it is not a valid one."""
    name = (username or "").strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise AccountError(f"invalid user name {username!r}: 2-32 characters, letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}")
    return role


def check_password(password: str, username: str | None = None) -> str:
    """AccountError unless ``password`` is acceptable (length, not blank, not the user name)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password too long: at most {MAX_PASSWORD} characters")
    if not password.strip():
        raise AccountError("password must not be blank")
    if username is not None and password.strip().lower() == username.lower():
        raise AccountError("password must not be the user name")
    return password


class Accounts:
    """The users and ownership records in the database of ``engine`` (tables created if missing)."""

    def __init__(self, engine: Engine, hasher: PasswordHasher | None = None):
        self.engine = engine
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self._store = None
        try:
            metadata.create_all(engine)
        except (OperationalError, ProgrammingError):
            # Another process created the tables between create_all's look and its CREATE: look again.
            metadata.create_all(engine)

    @classmethod
    def open(cls, url: str | None = None) -> Accounts:
        """The accounts in the results store at ``url`` (default: EMBEDLAB_RESULTS_DB or the default store),
        creating the store if it does not exist yet (``embedlab users create-admin`` on a fresh machine)."""
        from ..bench.store import ResultsStore

        store = ResultsStore(url)
        accounts = cls(store.engine)
        accounts._store = store
        return accounts

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- users ----------------------------------------------------------------------------------------------------
    def create_user(self, username: str, password: str, role: str = "researcher") -> User:
        name = normalise_username(username)
        check_role(role)
        check_password(password, name)
        row = _UserRow(username=name, password_hash=self.hasher.hash(password), role=role, active=True,
                       session_version=0, created_at=_now())
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
                session.flush()
                user = _user(row)
        except IntegrityError:
            raise AccountError(f"user {name!r} already exists") from None
        log.info("created user %s (%s)", name, role)
        return user

    def get(self, user_id: int) -> User | None:
        with Session(self.engine) as session:
            row = session.get(_UserRow, user_id)
            return _user(row) if row is not None else None

    def get_by_name(self, username: str) -> User | None:
        try:
            name = normalise_username(username)
        except AccountError:
            return None
        with Session(self.engine) as session:
            row = session.scalars(select(_UserRow).where(_UserRow.username == name)).first()
            return _user(row) if row is not None else None

    def _require(self, session: Session, who: str | int) -> _UserRow:
        if isinstance(who, int):
            row = session.get(_UserRow, who)
        else:
            try:
                name = normalise_username(who)
            except AccountError:
                row = None
            else:
                row = session.scalars(select(_UserRow).where(_UserRow.username == name)).first()
        if row is None:
            raise NotFound(f"no user {who!r}")
        return row

    def list_users(self) -> list[User]:
        with Session(self.engine) as session:
            return [_user(r) for r in session.scalars(select(_UserRow).order_by(_UserRow.username))]

    def count_users(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(_UserRow)) or 0

    def authenticate(self, username: str, password: str) -> User | None:
        """The user when the name and password match an active account, else None (the same for a wrong
        password, an unknown name and a disabled account: the login page says no more than that)."""
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return None
        try:
            name = normalise_username(username)
        except AccountError:
            name = None
        with Session(self.engine) as session, session.begin():
            row = session.scalars(select(_UserRow).where(_UserRow.username == name)).first() if name else None
            if row is None:
                self._verify(self._dummy(), password)  # the same work as a real check: no timing oracle
                return None
            if not self._verify(row.password_hash, password):
                return None
            if not row.active:
                log.info("login refused for %s: account disabled", row.username)
                return None
            if self.hasher.check_needs_rehash(row.password_hash):
                row.password_hash = self.hasher.hash(password)
            return _user(row)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self.hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def change_password(self, user_id: int, old: str, new: str) -> User:
        """The user's own change: needs the old password. Ends every other session of the user."""
        with Session(self.engine) as session, session.begin():
            row = self._require(session, user_id)
            if not self._verify(row.password_hash, old if isinstance(old, str) else ""):
                raise AccountError("the current password is wrong")
            check_password(new, row.username)
            row.password_hash = self.hasher.hash(new)
            row.session_version += 1
            return _user(row)

    def set_password(self, who: str | int, new: str) -> User:
        """An administrator's reset (``embedlab users set-password``): no old password. Ends the user's sessions."""
        with Session(self.engine) as session, session.begin():
            row = self._require(session, who)
            check_password(new, row.username)
            row.password_hash = self.hasher.hash(new)
            row.session_version += 1
            return _user(row)

    def set_role(self, who: str | int, role: str) -> User:
        check_role(role)
        with Session(self.engine) as session, session.begin():
            row = self._require(session, who)
            if row.role == "admin" and role != "admin":
                self._keep_an_admin(session, row)
            row.role = role
            return _user(row)

    def set_active(self, who: str | int, active: bool) -> User:
        """Disable (or enable again) an account; a disabled user's sessions stop at their next request."""
        with Session(self.engine) as session, session.begin():
            row = self._require(session, who)
            if not active and row.active and row.role == "admin":
                self._keep_an_admin(session, row)
            if row.active != active:
                row.active = active
                row.session_version += 1
            return _user(row)

    @staticmethod
    def _keep_an_admin(session: Session, row: _UserRow) -> None:
        others = session.scalar(select(func.count()).select_from(_UserRow).where(
            _UserRow.role == "admin", _UserRow.active.is_(True), _UserRow.id != row.id)) or 0
        if not others:
            raise AccountError(f"{row.username} is the last active admin; make another user admin first")

    # -- ownership ------------------------------------------------------------------------------------------------
    @staticmethod
    def _key(kind: str, object_id: str) -> tuple[str, str]:
        if kind not in OWNED_KINDS:
            raise ValueError(f"unknown owned kind {kind!r}; known: {', '.join(OWNED_KINDS)}")  # a page's bug
        object_id = str(object_id)
        if not object_id or len(object_id) > MAX_OBJECT_ID:
            raise NotFound(f"no such {kind} {object_id[:40]!r}")
        return kind, object_id

    def own(self, kind: str, object_id: str, user: User) -> None:
        """Record ``user`` as the owner of a new object. Idempotent for the same owner; AccountError if another
        user owns it already (ids are the pages' own uuids, so this means a bug or a forged id)."""
        kind, object_id = self._key(kind, object_id)
        try:
            with Session(self.engine) as session, session.begin():
                session.add(_OwnershipRow(kind=kind, object_id=object_id, owner_id=user.id, created_at=_now()))
        except IntegrityError:
            owner = self.owner_of(kind, object_id)
            if owner is None or owner.id != user.id:
                raise AccountError(f"{kind} {object_id} already belongs to another user") from None

    def owner_of(self, kind: str, object_id: str) -> User | None:
        kind, object_id = self._key(kind, object_id)
        with Session(self.engine) as session:
            row = session.scalars(select(_UserRow).join(_OwnershipRow, _OwnershipRow.owner_id == _UserRow.id).where(
                _OwnershipRow.kind == kind, _OwnershipRow.object_id == object_id)).first()
            return _user(row) if row is not None else None

    def require_owner(self, kind: str, object_id: str, user: User, *, allow_admin: bool = True) -> None:
        """NotFound (404) unless ``user`` owns the object, or is an admin and ``allow_admin`` (admins may read
        everything; pass allow_admin=False where only the owner may act). Another user's object looks exactly like
        a missing one, so ids cannot be probed."""
        if allow_admin and user.is_admin:
            self._key(kind, object_id)
            return
        owner = self.owner_of(kind, object_id)
        if owner is None or owner.id != user.id:
            raise NotFound(f"no such {kind} {object_id}")

    def owned_ids(self, kind: str, user: User) -> list[str]:
        """The ids of ``kind`` the user may see, oldest first: their own, or every recorded one for an admin."""
        if kind not in OWNED_KINDS:
            raise ValueError(f"unknown owned kind {kind!r}; known: {', '.join(OWNED_KINDS)}")
        stmt = select(_OwnershipRow.object_id).where(_OwnershipRow.kind == kind)
        if not user.is_admin:
            stmt = stmt.where(_OwnershipRow.owner_id == user.id)
        with Session(self.engine) as session:
            return list(session.scalars(stmt.order_by(_OwnershipRow.created_at, _OwnershipRow.object_id)))

    def disown(self, kind: str, object_id: str) -> None:
        """Forget the ownership record of a deleted object."""
        kind, object_id = self._key(kind, object_id)
        with Session(self.engine) as session, session.begin():
            session.execute(delete(_OwnershipRow).where(_OwnershipRow.kind == kind,
                                                        _OwnershipRow.object_id == object_id))

    def bump_session_version(self, user_id: int) -> None:
        """End every session of the user (e.g. "log out everywhere")."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(_UserRow).where(_UserRow.id == user_id)
                            .values(session_version=_UserRow.session_version + 1))
