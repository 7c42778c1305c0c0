"""A thin, typed wrapper over the `acme` package: accounts, orders over HTTP-01, revocation.

    accounts = AcmeAccounts(redis, SecretBox(...), ca_bundle=..., timeout_s=...)
    acme = accounts.client(directory_url, email)      # registered once per (directory, email)
    url = acme.place_order(domains, key_pem)          # the caller records `url` first...
    issued = acme.complete_order(url, key_pem, challenges, deadline)   # ...then completes it

`complete_order` resumes an order in whatever state it is (pending, ready, processing,
valid), so a worker that dies half-way and gets the message again finishes the same order.
Polling starts at 50 ms and doubles up to 2 s, or waits what the CA's Retry-After says.

Errors leave this module as app.errors only: RateLimited, ChallengeFailed, AcmeError (the CA
refused) and Unavailable (the CA cannot be reached or failed on its side).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import josepy as jose
import redis
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app import redis as keys
from app.crypto import SecretBox
from app.errors import AcmeError, ChallengeFailed, RateLimited, Unavailable
from app.stores.challenges import ChallengeStore

log = logging.getLogger(__name__)

USER_AGENT = "berth"
FIRST_POLL_S = 0.05
MAX_POLL_S = 2.0
CHALLENGE_TTL_S = 3600
VALIDATION_CODES = {"unauthorized", "incorrectResponse", "connection", "dns", "tls", "caa",
                    "unknownHost", "dnssec"}


# -- keys and certificates -------------------------------------------------------------------


def generate_key_pem(key_type: str) -> str:
    """A new private key as PKCS#8 PEM: ec256 (P-256, the default), ec384 or rsaNNNN."""
    if key_type == "ec256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "ec384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif key_type.startswith("rsa") and key_type[3:].isdigit():
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    else:
        raise ValueError(f"unknown key type {key_type!r}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


@dataclass(frozen=True)
class Issued:
    """A certificate as obtained: the full chain (leaf first) and the facts berth stores."""

    cert_pem: str
    not_before: float
    not_after: float
    serial: str
    domains: tuple[str, ...]


def describe(cert_pem: str) -> Issued:
    """Validity, serial and names of the leaf of a PEM chain."""
    leaf = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return Issued(cert_pem=cert_pem, not_before=leaf.not_valid_before_utc.timestamp(),
                  not_after=leaf.not_valid_after_utc.timestamp(),
                  serial=format(leaf.serial_number, "x"), domains=names)


@dataclass(frozen=True)
class RenewalWindow:
    """When to renew (epoch seconds): a time the CA suggested (source "ari"), or None when
    the directory offers no renewal information; `retry_at` is when to ask again."""

    renew_at: float | None
    retry_at: float


# -- error translation -----------------------------------------------------------------------


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from now that a Retry-After header asks for, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _problem(error: messages.Error) -> str:
    return error.detail or error.description or str(error.typ)


def translate(ex: Exception, what: str) -> Exception:
    """The app.errors exception for an `acme`/requests failure while doing `what`."""
    if isinstance(ex, messages.Error):
        code = error_code(ex)
        if code == "rateLimited":
            wait = _retry_after_s(getattr(ex, "retry_after", None))
            return RateLimited(f"the CA rate-limited {what}: {_problem(ex)}",
                               retry_after=time.time() + wait if wait is not None else None)
        if code == "serverInternal":
            return Unavailable(f"the CA failed while {what}: {_problem(ex)}")
        if code in VALIDATION_CODES:
            return ChallengeFailed(f"{what}: {_problem(ex)}", code=code)
        return AcmeError(f"the CA refused {what}: {_problem(ex)}", code=code)
    if isinstance(ex, requests.exceptions.RequestException):
        return Unavailable(f"the CA cannot be reached while {what}: {ex}")
    if isinstance(ex, errors.ClientError):
        response = ex.args[0] if ex.args else None
        status = getattr(response, "status_code", 0)
        if isinstance(response, requests.Response) and status >= 500:
            return Unavailable(f"the CA answered HTTP {status} while {what}")
        return AcmeError(f"unexpected answer from the CA while {what}: {ex}")
    if isinstance(ex, errors.Error):
        return AcmeError(f"{what} failed: {ex}")
    return ex


def error_code(error: messages.Error) -> str:
    return str(error.typ).rsplit(":", 1)[-1]


class _Network(client.ClientNetwork):
    """ClientNetwork that keeps a problem response's Retry-After on the raised error, so a
    rateLimited answer can say when to come back."""

    @classmethod
    def _check_response(cls, response, content_type=None):
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as error:
            error.retry_after = response.headers.get("Retry-After")
            raise


# -- accounts --------------------------------------------------------------------------------


def account_id(directory_url: str, email: str) -> str:
    return hashlib.sha256(f"{directory_url}\n{email}".encode()).hexdigest()[:32]


class AcmeAccounts:
    """One ACME account per (directory URL, e-mail): its key lives in Redis (sealed when a
    secret key is set); registered clients are cached per process and shared by threads."""

    def __init__(self, client: redis.Redis, box: SecretBox, *, ca_bundle: str = "",
                 timeout_s: float = 30.0):
        self.redis = client
        self.box = box
        self.verify: bool | str = ca_bundle or True
        self.timeout_s = timeout_s
        self._clients: dict[tuple[str, str], AcmeClient] = {}
        self._lock = threading.Lock()

    def client(self, directory_url: str, email: str = "") -> AcmeClient:
        cache_key = (directory_url, email)
        with self._lock:
            cached = self._clients.get(cache_key)
        if cached is not None:
            return cached
        acme = AcmeClient(self, directory_url, email)
        acme.register()
        with self._lock:
            return self._clients.setdefault(cache_key, acme)

    def forget(self, directory_url: str, email: str = "") -> None:
        with self._lock:
            self._clients.pop((directory_url, email), None)

    def account_key(self, directory_url: str, email: str) -> tuple[jose.JWKEC, dict]:
        """The stored account key (made on first use; SET NX lets concurrent first uses agree
        on one key) and the stored account document."""
        key = keys.acme_account(account_id(directory_url, email))
        purpose = f"acme-account:{directory_url}:{email}"
        if not self.redis.exists(key):
            private = ec.generate_private_key(ec.SECP256R1())
            jwk = jose.JWKEC(key=private)
            document = {"directory": directory_url, "email": email, "uri": "",
                        "key": self.box.seal(json.dumps(jwk.to_json()), purpose)}
            self.redis.set(key, json.dumps(document), nx=True)
        document = json.loads(self.redis.get(key))
        jwk = jose.JWKEC.from_json(json.loads(self.box.open(document["key"], purpose)))
        return jwk, document

    def save_account_uri(self, directory_url: str, email: str, uri: str) -> None:
        key = keys.acme_account(account_id(directory_url, email))
        document = json.loads(self.redis.get(key))
        if document.get("uri") != uri:
            document["uri"] = uri
            self.redis.set(key, json.dumps(document))


# -- one account's client --------------------------------------------------------------------


class AcmeClient:
    def __init__(self, accounts: AcmeAccounts, directory_url: str, email: str):
        self.accounts = accounts
        self.directory_url = directory_url
        self.email = email
        self._acme: client.ClientV2 | None = None
        self._register_lock = threading.Lock()

    # -- account ---------------------------------------------------------------------------

    def register(self) -> None:
        """Load or create the account key and make sure the CA knows the account."""
        with self._register_lock:
            jwk, _document = self.accounts.account_key(self.directory_url, self.email)
            net = _Network(key=jwk, alg=jose.ES256, verify_ssl=self.accounts.verify,
                           user_agent=USER_AGENT, timeout=int(self.accounts.timeout_s))
            try:
                directory = client.ClientV2.get_directory(self.directory_url, net)
                acme = client.ClientV2(directory, net)
                registration = messages.NewRegistration.from_data(
                    email=self.email or None, terms_of_service_agreed=True)
                try:
                    regr = acme.new_account(registration)
                    uri = regr.uri
                except errors.ConflictError as existing:  # this key already has an account
                    uri = existing.location
                    net.account = messages.RegistrationResource(
                        uri=uri, body=messages.Registration())
            except Exception as ex:
                raise translate(ex, f"registering an account with {self.directory_url}") from ex
            self.accounts.save_account_uri(self.directory_url, self.email, uri)
            self._acme = acme
            log.info("ACME account ready at %s", uri)

    @property
    def acme(self) -> client.ClientV2:
        assert self._acme is not None, "register() first"
        return self._acme

    @property
    def supports_renewal_info(self) -> bool:
        return "renewalInfo" in self.acme.directory.to_partial_json()

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        """Run one `acme` call, translating errors; an account the CA forgot (a restarted
        test CA, a deactivated account) is registered again once and the call repeated."""
        try:
            return fn(*args, **kwargs)
        except messages.Error as ex:
            if error_code(ex) != "accountDoesNotExist":
                raise translate(ex, what) from ex
        except Exception as ex:
            raise translate(ex, what) from ex
        log.warning("the CA does not know our account any more; registering again")
        self.register()
        try:
            return fn(*args, **kwargs)
        except Exception as ex:
            raise translate(ex, what) from ex

    def _fetch(self, url: str) -> requests.Response:
        """POST-as-GET (RFC 8555 6.3)."""
        return self.acme.net.post(url, None, new_nonce_url=self.acme.directory["newNonce"])

    # -- orders ----------------------------------------------------------------------------

    def place_order(self, domains: tuple[str, ...]) -> str:
        """Create an order for `domains`; returns its URL (record it before answering)."""
        def order():
            # Not ClientV2.new_order: that also fetches every authorization, which
            # complete_order does anyway.
            identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=d)
                           for d in domains]
            response = self.acme.net.post(self.acme.directory["newOrder"],
                                          messages.NewOrder(identifiers=identifiers),
                                          new_nonce_url=self.acme.directory["newNonce"])
            return response.headers["Location"]

        return self._call(f"ordering a certificate for {', '.join(domains)}", order)

    def complete_order(self, order_url: str, key_pem: str, challenge_store: ChallengeStore,
                       deadline: float) -> Issued:
        """Drive an order to a certificate: answer HTTP-01 for pending authorizations through
        the challenge store, finalize with a CSR for `key_pem`, download the chain."""
        what = "completing the order"
        order = self._call(what, self._order, order_url)
        if order.status == messages.STATUS_PENDING:
            tokens = self._call(what, self._answer_pending, order, challenge_store)
            try:
                order = self._poll(order_url, deadline, what="validation",
                                   done=lambda o: o.status != messages.STATUS_PENDING)
            finally:
                for token in tokens:
                    challenge_store.delete(token)
        if order.status == messages.STATUS_INVALID:
            raise self._why_invalid(order)
        if order.status == messages.STATUS_READY:
            csr = crypto_util.make_csr(key_pem.encode("ascii"), list(_names(order)))
            order = self._call("finalizing the order", self._finalize, order, csr)
        if order.status == messages.STATUS_PROCESSING or (
                order.status == messages.STATUS_VALID and not order.certificate):
            order = self._poll(order_url, deadline, what="issuance",
                               done=lambda o: o.status != messages.STATUS_PROCESSING
                               and not (o.status == messages.STATUS_VALID and not o.certificate))
        if order.status == messages.STATUS_INVALID:
            raise self._why_invalid(order)
        if order.status != messages.STATUS_VALID:
            raise AcmeError(f"the order is {order.status} after finalization")
        chain = self._call("downloading the certificate",
                           lambda: self._fetch(order.certificate).text)
        return describe(chain)

    def _order(self, url: str) -> messages.Order:
        return messages.Order.from_json(self._fetch(url).json())

    def _answer_pending(self, order: messages.Order, store: ChallengeStore) -> list[str]:
        """Publish the key authorization of each pending authorization's HTTP-01 challenge
        in the store, then tell the CA to validate; returns the tokens published."""
        tokens = []
        for authz_url in order.authorizations:
            authz = messages.Authorization.from_json(self._fetch(authz_url).json())
            if authz.status != messages.STATUS_PENDING:
                continue
            challb = next((c for c in authz.challenges
                           if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise AcmeError(f"the CA offers no HTTP-01 challenge for "
                                f"{authz.identifier.value}")
            response, key_authorization = challb.chall.response_and_validation(
                self.acme.net.key)
            store.put(challb.chall.encode("token"), key_authorization, ttl_s=CHALLENGE_TTL_S)
            tokens.append(challb.chall.encode("token"))
            if challb.status == messages.STATUS_PENDING:
                self.acme.answer_challenge(challb, response)
        return tokens

    def _finalize(self, order: messages.Order, csr_pem: bytes) -> messages.Order:
        request = messages.CertificateRequest(csr=x509.load_pem_x509_csr(csr_pem))
        try:
            response = self.acme.net.post(order.finalize, request,
                                          new_nonce_url=self.acme.directory["newNonce"])
        except messages.Error as ex:
            if error_code(ex) != "orderNotReady":
                raise
            return order.update(status=messages.STATUS_PROCESSING)  # finalized by a sibling
        return messages.Order.from_json(response.json())

    def _poll(self, url: str, deadline: float, *, what: str,
              done: Callable[[messages.Order], bool]) -> messages.Order:
        """Fetch the order until `done`: 50 ms, doubling to 2 s, or the CA's Retry-After."""
        delay = FIRST_POLL_S
        while True:
            response = self._call(f"polling the order ({what})", self._fetch, url)
            order = messages.Order.from_json(response.json())
            if done(order):
                return order
            wait = _retry_after_s(response.headers.get("Retry-After"))
            wait = delay if wait is None else wait
            if time.time() + wait > deadline:
                raise AcmeError(f"the CA did not finish {what} in time (order {order.status})",
                                code="timeout")
            time.sleep(wait)
            delay = min(delay * 2, MAX_POLL_S)

    def _why_invalid(self, order: messages.Order) -> AcmeError:
        """The most telling reason an order became invalid: a failed challenge first."""
        for authz_url in order.authorizations:
            with contextlib.suppress(Exception):
                authz = messages.Authorization.from_json(self._fetch(authz_url).json())
                for challb in authz.challenges:
                    if challb.error is not None:
                        return ChallengeFailed(
                            f"validation of {authz.identifier.value} failed: "
                            f"{_problem(challb.error)}", code=error_code(challb.error))
        if order.error is not None:
            return translate(order.error, "issuing the certificate")
        return AcmeError("the CA marked the order invalid without saying why")

    # -- after issuance --------------------------------------------------------------------

    def revoke(self, cert_pem: str, reason: int = 0) -> None:
        """Revoke with the account key; a certificate already revoked counts as done."""
        leaf = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        try:
            self._call("revoking the certificate", self.acme.revoke, leaf, reason)
        except AcmeError as ex:
            if ex.code != "alreadyRevoked":
                raise

    def renewal_window(self, cert_pem: str) -> RenewalWindow:
        """The CA's suggested renewal time (ACME Renewal Information, RFC 9773), if offered."""
        if not self.supports_renewal_info:
            return RenewalWindow(renew_at=None, retry_at=time.time() + 6 * 3600)
        try:
            renew_at, retry_at = self.acme.renewal_time(cert_pem.encode("ascii"))
        except errors.ARIError as ex:
            log.warning("renewal information unavailable: %s", ex)
            return RenewalWindow(renew_at=None, retry_at=_epoch(ex.retry_after))
        return RenewalWindow(renew_at=_epoch(renew_at) if renew_at else None,
                             retry_at=_epoch(retry_at))


def _names(order: messages.Order) -> tuple[str, ...]:
    return tuple(identifier.value for identifier in order.identifiers)


def _epoch(value: datetime.datetime) -> float:
    """`acme` mixes aware UTC and naive local datetimes; both to epoch seconds."""
    return value.timestamp()
