"""Secure aggregation: central learns only the sum of the remote sites' replies, exactly.

Design note
-----------
**What it is for.** The pooled fits (SIMI, SIMICE) use only sums of the sites' replies: n, X'X,
X'y, y'y, or Newton's H, g and Q. With the job option ``secure_aggregation`` each remote site
masks every value of such a reply, so that central sees, per site, numbers unrelated to that
site's statistics, and only their sum over the remote sites means anything. Central adds its
own part in the clear: it is central's own data.

**Which replies.** An algorithm declares in ``params.json`` the operations whose replies central
only ever sums (``"summed": ["gaussian_stats", "logistic_start", "logistic_stats"]``). The
option is offered only when every operation that returns values is summed, and only for jobs
with at least two remote sites (a sum over one site is that site). Both ends refuse anything
else; a site of a secure job refuses to answer a summed operation unmasked, so a curious
central cannot simply ask for it.

**Keys.** When the job opens, each remote site makes a fresh X25519 key pair and sends its public
key (32 bytes, as four int64 words) in its summary. Central relays every remote site's key to
every site (the runtime operation ``fip.keys``, riding on the next request). Each pair of sites
a < b derives a 32-byte seed: HKDF-SHA256 over their X25519 shared secret, bound to the job id
and both site ids. Central holds public keys only: never a secret that cancels a mask. A site
accepts the relayed keys only for exactly the job's sites, its own key among them unchanged,
and no key given for two sites (else the site whose key it is could remove both masks).
Fingerprints (the first 16 bytes of the public key's SHA-256, in groups of four hex digits) are
shown on the site's job page and on central's, so that a site's user can compare them and
detect a substituted key.

**Masks.** Every masked round has a number chosen by central, which a site accepts only above
every round it masked before (a mask is never used twice). The mask of pair (a, b) in round r is
the ChaCha20 keystream under a key derived from the pair's seed, r and a digest of what was
asked (operation, arguments, scale) and of everything the site ran in the job before it (the
job as opened, the keys, every instruction, in order; masked rounds aside, since summed
operations change nothing), with r in the nonce: 16 bytes (one value mod 2^128) per number
of the reply, numbers in the declared order of the reply's keys. Site a adds it, site b
subtracts it, so the masks cancel in the sum over the remote sites, but only among sites asked
the very same things in the same order: a central that asked sites different things in one
round, or gave one site an instruction the others did not get (say, to impute with
parameters it chose, then ask the same question again, so that the difference of two sums
would be that site's own change), gets sums that decode to noise.

**Exact fixed point.** A value v is sent as round(v * 2^f) modulo 2^128, f chosen by central for
the round from the job: ``f = 127 - ceil(log2 S) - bits`` with S the remote sites and ``bits`` a
bound on the magnitude of any summed value: ``log2(N) + 2 (E + 8) + log2(1 + p A) + 2`` where N
is every participant's usable rows, E the largest power of two a participant declared its values
below at open (an ``int``, so a site discloses the binary order of its largest value), 8 bits of
headroom for imputed values beyond the observed ones, p the design width and A the largest
number in the operation's arguments (Newton's beta enters the log-likelihood); 3 (E + 8) for an
operation declaring third derivatives (a value over ``u``: products of three values), whose
other entries then keep E + 8 bits fewer. The quantum 2^-f
is then about 2^-125 of the bound: the largest entries keep some 100 bits, and an entry keeps
float64's 53 bits as long as it is within about 2^45 of the largest, so the decoded sums equal
the float sums to rounding (so a column whose values are some 10^10 times smaller than the
table's largest keeps fewer digits: one scale serves a whole reply; a scale per column would
need each site to disclose every column's magnitude). Each site checks that every value it
encodes is below 2^127 / 2^ceil(log2 S) in magnitude, so the sum of S values never wraps; a
value beyond it is refused (the job fails saying so), never wrapped. Such a refusal tells
central one bit about the site's values, so a site checks first, before it looks at any value,
that the scale is no finer than its own rows and magnitude allow (what central derives from
every site's is coarser still), and after any error answering a masked round it answers nothing
more in the job: one bit a job, never a search. Counts of kind ``rows`` (a fit's n) travel in
the clear: the site declared them when the job opened, and its policy's ``min_rows`` is checked
against them at the site. Every other value is masked, whole numbers exactly (as int64, with f =
0).

**Arithmetic.** numpy has no 128-bit integer: a value is two uint64 limbs (low, high) in the last
axis of an array, added and subtracted with carries, vectorised (for p = 200, an X'X of 40,000
values is masked in a few milliseconds). On the wire the limbs travel as int64 arrays of shape
``declared + (2,)``.

**Dropouts.** A site whose connection drops during a masked round is not re-sent the same
request: once it is back (within ``FIP_CENTRAL_SITE_GRACE_SECONDS``), central starts the round
again, for every remote site, with a fresh round number and so fresh masks. The instructions
that rode on the lost request run once at the lost site (the restart names the request it
replaces, and a site that ran it skips them). Past the grace the job fails naming the site.
Shamir-share recovery of a lost site's masks (SecAgg+) is not built: every remote site must
answer every masked round.

**Threat model.** Central is honest but curious: it runs the protocol and relays the keys
faithfully, and would like to read a site's statistics. Then it learns only the sums over the
remote sites (and the per-site counts that were already shared). A malicious central could
substitute its own public keys for a site's, derive every seed, and unmask; this is detected
afterwards, not prevented: each site's page lists the fingerprints it was given, its own
marked, and the sites' users compare them with each other (central's page is only what
central says). Sites that collude with central can remove their own masks and so learn the
sum of the others; with two remote sites, one of them and central learn the other's sums
(docs/algorithms.md says all of this for users). Central can also make a site refuse for
overflow (by having it impute huge values), which tells it one bit (a value is large) and ends
the job at that site.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from federation.errors import InputError, ProtocolError, SiteRefused
from federation.replies import ReplySchema, Value

OPTION = "secure_aggregation"
"""The job parameter that turns masking on."""
KEYS = "fip.keys"
"""Runtime operation: central relays the remote sites' public keys."""
MASKED = "fip.masked"
"""Runtime operation: a summed operation whose reply the site masks."""
PUBLIC_KEY = "mask_key"
"""Summary value at open: the site's X25519 public key as four int64 words."""
MAGNITUDE = "magnitude"
"""Summary value at open: every value of the site's table is below 2 ** magnitude."""
SUMMARY: Mapping[str, Value] = {PUBLIC_KEY: Value("int", (4,)), MAGNITUDE: Value("int")}
HEADROOM_BITS = 8
"""Imputed values may exceed the observed ones: the bound allows 2^8 times the largest."""
MAX_MAGNITUDE = 1100
MAX_RESTARTS = 5
"""How often a job's masked rounds may start again after a site was lost."""
EXTRA_REQUESTS = 2 + MAX_RESTARTS
"""Operations a secure job may ask of a site beyond its declared fits: the key relay, the
masked summary, and one masked round per restart (a site does not count the instructions a
restart repeats, as it skips them if it ran them, and never ran them otherwise)."""
_INFO = b"fip secure aggregation 1"
_MODULUS_BITS = 128


def enabled(params: Mapping[str, Any]) -> bool:
    return bool(params.get(OPTION))


def check_job(replies: ReplySchema, params: Mapping[str, Any], sites: Sequence[str]) -> None:
    """Refuse the option for an algorithm whose replies are not all summed, or for a job with
    fewer than two remote sites. Raises ``InputError`` with what to do instead."""
    if not enabled(params):
        return
    unsummed = replies.unsummed()
    if unsummed:
        raise InputError(
            f"parameter '{OPTION}': this algorithm needs some replies per site "
            f"({', '.join(unsummed)} are not summed), so they cannot be masked; "
            "use a pooled method (SIMI, SIMICE) or turn the option off"
        )
    if len(set(sites)) < 2:
        raise InputError(
            f"parameter '{OPTION}' needs at least two remote sites (this job has "
            f"{len(set(sites))}): a sum over one site is that site's own reply"
        )


# ---------------------------------------------------------------- keys


def fingerprint(public: bytes) -> str:
    """A public key as people compare it: SHA-256, the first 16 bytes in groups of four hex."""
    digest = hashlib.sha256(public).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def key_words(public: bytes) -> np.ndarray:
    """32 bytes of a public key as the four int64 words that travel."""
    return np.frombuffer(public, dtype="<i8").copy()


def key_bytes(words: Any) -> bytes:
    array = np.asarray(words)
    if array.shape != (4,) or array.dtype.kind not in "iu":
        raise ProtocolError("a public key is four whole numbers")
    return array.astype("<i8").tobytes()


def pair_seed(
    private: X25519PrivateKey, peer: bytes, *, job_id: str, site: str, other: str
) -> bytes:
    """The seed sites ``site`` and ``other`` share in job ``job_id``: HKDF over X25519."""
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        raise SiteRefused(
            f"central relayed a public key for site '{other}' that is not one"
        ) from None
    low, high = sorted((site, other))
    info = b"\0".join([_INFO, job_id.encode(), low.encode(), high.encode()])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def keystream(seed: bytes, round_number: int, count: int, context: bytes = b"") -> np.ndarray:
    """``count`` values mod 2^128 (uint64 limbs low, high): the ChaCha20 keystream under a key
    derived from ``seed`` for this round and ``context`` (HMAC-SHA256), the round number in the
    nonce. One mask per value of a round."""
    round_bytes = struct.pack("<Q", round_number)
    key = hmac.new(seed, b"round" + round_bytes + context, hashlib.sha256).digest()
    nonce = b"\0\0\0\0" + round_bytes + b"\0\0\0\0"  # 32-bit block counter, then the round
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    stream = encryptor.update(bytes(16 * count))
    return np.frombuffer(stream, dtype="<u8").reshape(count, 2).copy()


# ---------------------------------------------------------------- 128-bit arithmetic


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b mod 2^128, limbs in the last axis. Computed on rows of limbs: numpy wraps array
    arithmetic silently, but warns when a scalar wraps (one value's limbs would be scalars)."""
    x, y = a.reshape(-1, 2), b.reshape(-1, 2)
    lo = x[:, 0] + y[:, 0]
    carry = (lo < x[:, 0]).astype(np.uint64)
    return np.stack([lo, x[:, 1] + y[:, 1] + carry], axis=-1).reshape(a.shape)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b mod 2^128."""
    x, y = a.reshape(-1, 2), b.reshape(-1, 2)
    borrow = (x[:, 0] < y[:, 0]).astype(np.uint64)
    return np.stack([x[:, 0] - y[:, 0], x[:, 1] - y[:, 1] - borrow], axis=-1).reshape(a.shape)


def negate(a: np.ndarray) -> np.ndarray:
    return subtract(np.zeros_like(a), a)


def limit_bits(sites: int) -> int:
    """log2 of the magnitude each of ``sites`` summands must stay below: their sum never wraps."""
    return _MODULUS_BITS - 1 - math.ceil(math.log2(max(sites, 1)))


def encode(values: np.ndarray, scale: int, *, sites: int) -> np.ndarray:
    """round(values * 2^scale) mod 2^128 as limbs; ``OverflowError`` if a value is beyond what
    ``sites`` summands may hold."""
    scaled = np.rint(np.ldexp(np.asarray(values, dtype=np.float64), scale))
    magnitude = np.abs(scaled)
    if not np.all(magnitude < 2.0 ** limit_bits(sites)):
        raise OverflowError
    high = np.floor(magnitude / 2.0**64)
    low = magnitude - high * 2.0**64  # exact: both are whole and the difference is below 2^64
    limbs = np.stack([low.astype(np.uint64), high.astype(np.uint64)], axis=-1)
    negative = scaled < 0
    if negative.any():
        limbs[negative] = negate(limbs[negative])
    return limbs


def encode_whole(values: np.ndarray) -> np.ndarray:
    """int64 values mod 2^128 as limbs, exactly (through float64, one above 2^53 would not be);
    any S < 2^63 of them sum without wrapping."""
    whole = np.asarray(values).astype(np.int64)
    high = np.where(whole < 0, np.uint64(2**64 - 1), np.uint64(0))
    return np.stack([whole.view(np.uint64), high], axis=-1)


def decode_whole(limbs: np.ndarray) -> np.ndarray:
    """The signed value of limbs mod 2^128 as int64, exactly; ``ProtocolError`` beyond int64."""
    low = limbs[..., 0].view(np.int64)
    extension = np.where(low < 0, np.uint64(2**64 - 1), np.uint64(0))
    if not np.array_equal(limbs[..., 1], extension):
        raise ProtocolError("a masked sum of whole numbers is beyond int64")
    return low.copy()


def decode(limbs: np.ndarray, scale: int) -> np.ndarray:
    """The signed value of limbs mod 2^128, times 2^-scale, as float64."""
    negative = limbs[..., 1] >= np.uint64(2**63)
    magnitude = np.where(negative[..., None], negate(limbs), limbs)
    value = magnitude[..., 1].astype(np.float64) * 2.0**64 + magnitude[..., 0].astype(np.float64)
    return np.ldexp(np.where(negative, -value, value), -scale)


def scale_for(
    *,
    rows: int,
    magnitude: int,
    width: int,
    largest_argument: float,
    sites: int,
    degree: int = 2,
) -> int:
    """The fixed-point exponent of a round (see the design note); ``degree`` is how many of the
    table's values multiply in a summed entry (:func:`degree`)."""
    bits = (
        math.ceil(math.log2(rows + 1))
        + degree * (magnitude + HEADROOM_BITS)
        + math.ceil(math.log2(1.0 + width * largest_argument))
        + 2
    )
    return limit_bits(sites) - bits


def degree(declared: Mapping[str, Value]) -> int:
    """How many of the table's values multiply in an entry of a reply: 3 where a value is
    declared over the parameter pairs ``u`` (third derivatives, sums of w x_a x_b x_c), else 2 (H,
    sums of w x_a x_b)."""
    return 3 if any("u" in value.shape for value in declared.values()) else 2


def largest_number(args: Mapping[str, Any]) -> float:
    """The largest magnitude among an operation's numeric arguments."""
    largest = 0.0
    for value in args.values():
        if isinstance(value, bool) or not isinstance(value, int | float | np.ndarray):
            continue
        array = np.asarray(value, dtype=np.float64)
        if array.size:
            largest = max(largest, float(np.max(np.abs(array))))
    return largest if math.isfinite(largest) else 0.0


def magnitude_of(values: np.ndarray) -> int:
    """The least e >= 0 with every finite |value| below 2^e."""
    finite = np.abs(values[np.isfinite(values)])
    if not finite.size:
        return 0
    _, exponent = np.frexp(float(finite.max()))
    return max(0, int(exponent))


# ---------------------------------------------------------------- a site's masks


@dataclass
class SiteMasks:
    """A remote site's side: its key pair, then the seeds it shares with every other site."""

    site: str
    job_id: str
    sites: int
    expected: tuple[str, ...] = ()
    """The job's remote sites as this site's user saw them: the keys must be theirs."""
    private: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    seeds: dict[str, bytes] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    last_round: int = -1

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    def agree(self, sites: Sequence[str], keys: Any) -> None:
        """Derive the seeds from the keys central relayed; the site's own must be its own."""
        if self.seeds:
            raise SiteRefused("central relayed the keys twice; the first set stands")
        words = np.asarray(keys)
        if words.shape != (len(sites), 4) or len(set(sites)) != len(sites):
            raise SiteRefused("central relayed keys that do not match the job's sites")
        if self.expected and sorted(sites) != sorted(self.expected):
            raise SiteRefused(
                "central relayed keys for other sites than the job's; this site does not take part"
            )
        if self.site not in sites:
            raise SiteRefused("central relayed keys without this site's own")
        if len({key_bytes(row) for row in words}) != len(sites):
            # One site's key given for another: that site could then remove both masks.
            raise SiteRefused(
                "central relayed one public key for two sites; this site does not take part"
            )
        for name, row in zip(sites, words, strict=True):
            public = key_bytes(row)
            self.fingerprints[name] = fingerprint(public)
            if name == self.site:
                if public != self.public:
                    raise SiteRefused(
                        "central relayed a key for this site that is not the one it made; "
                        "this site does not take part"
                    )
                continue
            self.seeds[name] = pair_seed(
                self.private, public, job_id=self.job_id, site=self.site, other=name
            )

    def mask(
        self,
        op: str,
        result: Mapping[str, Any],
        declared: Mapping[str, Value],
        *,
        round_number: int,
        scale: int,
        context: bytes = b"",
    ) -> dict[str, Any]:
        """The reply with every value but ``rows`` in fixed point plus this site's masks.
        ``context`` (a digest of the operation, its arguments and the scale) enters the masks,
        so they cancel only among sites asked the very same thing in the round."""
        if not self.seeds:
            raise SiteRefused("a masked round before central relayed the sites' keys")
        if round_number <= self.last_round:
            raise SiteRefused(
                f"central asked for masked round {round_number} after round {self.last_round}; "
                "a mask is never used twice"
            )
        self.last_round = round_number
        keys = [k for k, v in declared.items() if v.kind != "rows"]
        encoded: dict[str, np.ndarray] = {}
        for key in keys:
            value = np.asarray(result[key])
            try:
                encoded[key] = (
                    encode(value, scale, sites=self.sites)
                    if declared[key].kind == "float"
                    else encode_whole(value)
                )
            except OverflowError:
                raise SiteRefused(
                    f"the value '{key}' of '{op}' is beyond the fixed-point range central chose "
                    f"for this round (scale 2^{scale}); secure aggregation refuses it rather "
                    "than let the sum wrap"
                ) from None
        flat = (
            np.concatenate([encoded[k].reshape(-1, 2) for k in keys])
            if keys
            else np.zeros((0, 2), np.uint64)
        )
        for other, seed in self.seeds.items():
            stream = keystream(seed, round_number, flat.shape[0], context)
            flat = add(flat, stream) if self.site < other else subtract(flat, stream)
        masked: dict[str, Any] = {k: v for k, v in result.items() if declared[k].kind == "rows"}
        offset = 0
        for key in keys:
            size = encoded[key].size // 2
            part = flat[offset : offset + size].reshape(encoded[key].shape)
            masked[key] = part.view(np.int64)
            offset += size
        return masked


# ---------------------------------------------------------------- central's sum


def check_masked(
    op: str, result: Mapping[str, Any], declared: Mapping[str, Value], dims: Mapping[str, int]
) -> None:
    """A masked reply's shape: declared keys, ``rows`` as sent, the rest int64 limbs."""
    if set(result) != set(declared):
        raise ProtocolError(f"'{op}': masked reply keys differ from the declared ones")
    for key, value in declared.items():
        if value.kind == "rows":
            continue
        shape = tuple(d if isinstance(d, int) else dims[d] for d in value.shape) + (2,)
        array = result[key]
        if not isinstance(array, np.ndarray) or array.dtype != np.int64 or array.shape != shape:
            raise ProtocolError(f"'{op}' masked value '{key}' is not {list(shape)} limbs")


def unmask_sum(
    replies: Iterable[Mapping[str, Any]], declared: Mapping[str, Value], scale: int
) -> dict[str, Any]:
    """The sum over the remote sites' masked replies, decoded: float values as float64,
    whole numbers as int, ``rows`` summed as sent."""
    collected = list(replies)
    total: dict[str, Any] = {}
    for key, value in declared.items():
        if value.kind == "rows":
            total[key] = sum(int(r[key]) for r in collected)
            continue
        acc = np.asarray(collected[0][key]).view(np.uint64)
        for reply in collected[1:]:
            acc = add(acc, np.asarray(reply[key]).view(np.uint64))
        if value.kind == "float":
            decoded = decode(acc, scale)
            total[key] = float(decoded) if not value.shape else decoded
        else:
            whole = decode_whole(acc)
            total[key] = int(whole) if not value.shape else whole
    return total
