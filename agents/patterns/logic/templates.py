"""Online log template mining (a Drain-style parse tree over masked tokens) for error-pattern clustering."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.patterns.logic.masking import WILDCARD, is_punctuation, is_variable, mask

_STATE_VERSION = 1


@dataclass(frozen=True)
class MinerConfig:
    """One configuration for every log source: users cannot tune it per source against labels."""

    # Share of a template's (non-punctuation) tokens a message must repeat to join its cluster. High,
    # because masking already turned most variables into placeholders and clusters that differ only
    # in variables are merged by their constant words; what is left to tell apart are mostly
    # different constant words. Chosen by leave-one-dataset-out (benchmarks/loghub_quality.py, docs/detection.md).
    sim_threshold: float = 0.8
    depth: int = 5  # Drain leaf depth: the first depth-2 tokens route messages down the tree (protocol: 5)
    max_children: int = 100  # fan-out bound per tree node, keeps memory bounded on id-like tokens
    max_clusters: int = 50_000  # beyond this, new messages join their nearest cluster instead
    merge_by_constants: bool = True  # group clusters whose constant words are identical


@dataclass(frozen=True)
class PatternMatch:
    pattern_id: str
    template: str
    is_new: bool
    category: str


@dataclass
class _Cluster:
    pattern_id: str
    tokens: list[str]
    path: list[str]  # tree keys from the root to the leaf holding this cluster (rebuilt on restore)
    size: int = 1
    category: str = "other"
    seq: int = 0  # creation order, decides which id survives when two patterns merge

    @property
    def template(self) -> str:
        return _join(self.tokens)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    clusters: list[_Cluster] = field(default_factory=list)


def _join(tokens: Sequence[str]) -> str:
    return " ".join(tokens)


def _signature(tokens: Sequence[str]) -> tuple[str, ...]:
    """The constant words of a template, in order: what stays when every variable is left out."""
    return tuple(t for t in tokens if not is_variable(t) and not is_punctuation(t))


class PatternMiner:
    """Learns message templates online; ids are stable across a to_state/from_state round-trip."""

    def __init__(self, config: MinerConfig | None = None) -> None:
        self.config = config or MinerConfig()
        self._root = _Node()
        self._clusters: dict[str, _Cluster] = {}
        # Drain clusters are grouped into patterns: clusters whose constant words are identical (they
        # differ only by variables, possibly of different token lengths) share the oldest one's id.
        self._parent: dict[str, str] = {}
        self._by_signature: dict[tuple[str, ...], str] = {}

    def __len__(self) -> int:
        return sum(1 for pid in self._clusters if self._find(pid) == pid)

    def _find(self, pid: str) -> str:
        root = pid
        while (up := self._parent.get(root)) is not None:
            root = up
        while pid != root:  # path compression keeps lookups O(1) amortised
            nxt = self._parent[pid]
            self._parent[pid] = root
            pid = nxt
        return root

    def _index(self, cluster: _Cluster) -> None:
        if not self.config.merge_by_constants:
            return
        sig = _signature(cluster.tokens)
        if not sig:
            return  # all-variable templates say nothing about sameness
        other = self._by_signature.setdefault(sig, cluster.pattern_id)
        a, b = self._find(other), self._find(cluster.pattern_id)
        if a != b:
            # The older pattern survives, so ids already handed out for it stay valid.
            keep, drop = (a, b) if self._clusters[a].seq <= self._clusters[b].seq else (b, a)
            self._parent[drop] = keep

    def _result(self, cluster: _Cluster, is_new: bool) -> PatternMatch:
        root = self._clusters[self._find(cluster.pattern_id)]
        return PatternMatch(root.pattern_id, root.template, is_new and root is cluster, root.category)

    def _tokens(self, message: str) -> list[str]:
        return mask(message).split()

    def _search_leaf(self, tokens: list[str]) -> _Node | None:
        node = self._root.children.get(str(len(tokens)))
        for tok in tokens[: max(self.config.depth - 2, 0)]:
            if node is None:
                return None
            key = WILDCARD if is_variable(tok) else tok
            # An unknown constant falls back to the wildcard branch, as in Drain.
            node = node.children.get(key) or node.children.get(WILDCARD)
        return node

    def _insert_leaf(self, tokens: list[str]) -> tuple[_Node, list[str]]:
        path = [str(len(tokens))]
        node = self._root.children.setdefault(path[0], _Node())
        for tok in tokens[: max(self.config.depth - 2, 0)]:
            key = WILDCARD if is_variable(tok) else tok
            if key not in node.children and len(node.children) >= self.config.max_children:
                key = WILDCARD  # a full node sends newcomers to its wildcard branch
            node = node.children.setdefault(key, _Node())
            path.append(key)
        return node, path

    @staticmethod
    def _similarity(template: list[str], tokens: list[str]) -> tuple[float, int]:
        same = params = total = 0
        for t, m in zip(template, tokens, strict=True):
            if t == m and is_punctuation(t):
                continue  # a shared "-" or ":" is no evidence that two messages are the same event
            total += 1
            if t == WILDCARD:
                params += 1
            elif t == m:
                same += 1
        return (same / total if total else 1.0), params

    def _best(self, node: _Node, tokens: list[str]) -> _Cluster | None:
        best: _Cluster | None = None
        best_key = (-1.0, -1)
        for cluster in node.clusters:
            key = self._similarity(cluster.tokens, tokens)
            if key > best_key:
                best, best_key = cluster, key
        if best is not None and best_key[0] >= self.config.sim_threshold:
            return best
        return None

    def _new_id(self, tokens: list[str]) -> str:
        # Hash of the founding masked message: the same first message yields the same id on any worker.
        base = "p" + hashlib.blake2b(_join(tokens).encode(), digest_size=5).hexdigest()
        pid, n = base, 1
        while pid in self._clusters:
            n += 1
            pid = f"{base}-{n}"
        return pid

    def add(self, message: str) -> PatternMatch:
        tokens = self._tokens(message)
        node = self._search_leaf(tokens)
        cluster = self._best(node, tokens) if node is not None else None
        if cluster is None:
            node, path = self._insert_leaf(tokens)
            if len(self._clusters) >= self.config.max_clusters and node.clusters:
                cluster = max(node.clusters, key=lambda c: self._similarity(c.tokens, tokens))
            else:
                cluster = _Cluster(
                    self._new_id(tokens), list(tokens), path, 1, categorize(message), len(self._clusters)
                )
                self._clusters[cluster.pattern_id] = cluster
                node.clusters.append(cluster)
                self._index(cluster)
                return self._result(cluster, True)
        merged = [t if t == m else WILDCARD for t, m in zip(cluster.tokens, tokens, strict=True)]
        cluster.size += 1
        if merged != cluster.tokens:
            cluster.tokens = merged
            self._index(cluster)
        return self._result(cluster, False)

    def adopt(self, pattern_id: str, template: str, category: str) -> None:
        """Learn a pattern the counts know but this miner does not (its checkpoint is a few seconds behind
        them after a crash): a cluster of that id and template, so the pattern's next lines find it again."""
        if pattern_id in self._clusters or not template.strip():
            return
        tokens = template.split()
        node, path = self._insert_leaf(tokens)
        cluster = _Cluster(pattern_id, tokens, path, 1, category, len(self._clusters))
        self._clusters[pattern_id] = cluster
        node.clusters.append(cluster)
        self._index(cluster)

    def match(self, message: str) -> PatternMatch | None:
        tokens = self._tokens(message)
        node = self._search_leaf(tokens)
        cluster = self._best(node, tokens) if node is not None else None
        if cluster is None and self.config.merge_by_constants:
            # add() would fold this message into the pattern with the same constant words.
            pid = self._by_signature.get(_signature(tokens)) if _signature(tokens) else None
            cluster = self._clusters[pid] if pid is not None else None
        if cluster is None:
            return None
        return self._result(cluster, False)

    def to_state(self) -> bytes:
        clusters = [
            {"id": c.pattern_id, "tokens": c.tokens, "path": c.path, "size": c.size, "category": c.category}
            for c in self._clusters.values()
        ]
        doc = {
            "version": _STATE_VERSION,
            "config": asdict(self.config),
            "clusters": clusters,  # in creation order: their index is their seq
            "parent": {k: self._find(k) for k in self._parent},
            "signatures": [[list(k), v] for k, v in self._by_signature.items()],
        }
        return zlib.compress(json.dumps(doc, separators=(",", ":")).encode())

    @classmethod
    def from_state(cls, data: bytes, config: MinerConfig | None = None) -> PatternMiner:
        try:
            doc: dict[str, Any] = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError) as exc:  # corrupt checkpoint: callers decide to start fresh
            raise ValueError(f"unreadable pattern-miner state: {exc}") from exc
        if doc.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported pattern-miner state version {doc.get('version')!r}")
        miner = cls(config or MinerConfig(**doc["config"]))
        for raw in doc["clusters"]:
            cluster = _Cluster(
                raw["id"],
                list(raw["tokens"]),
                list(raw["path"]),
                int(raw["size"]),
                raw["category"],
                len(miner._clusters),
            )
            node = miner._root
            for key in cluster.path:
                node = node.children.setdefault(key, _Node())
            node.clusters.append(cluster)
            miner._clusters[cluster.pattern_id] = cluster
        miner._parent = dict(doc["parent"])
        miner._by_signature = {tuple(k): v for k, v in doc["signatures"]}
        return miner


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_DB = _rx(
    r"\b(?:database|db|sql|jdbc|postgres\w*|mysql|mariadb|oracle|mongo\w*|redis|dynamodb|rds|aurora|"
    r"hikari\w*|sqlalchemy|psycopg\w*|connection pool|sqlstate)\b"
)
_CONNECTION_TROUBLE = _rx(
    r"\b(?:connect\w*|pool|refused|unreachable|timed? ?out|timeout|lost|closed|reset|too many|"
    r"unavailable|handshake|authenticat\w*)\b"
)
_TIMEOUT = _rx(r"\b(?:timed? ?out|timeout\w*|deadline exceeded|etimedout|time limit exceeded|took too long)")
_API = _rx(
    r"\b(?:api|http|https|rest|graphql|grpc|endpoint|upstream|status code|webhook|bad gateway|"
    r"service unavailable|too many requests|rate limit\w*|throttl\w*)\b"
    r"|\b(?:status|response|code)[ =:]+[45]\d\d\b"
)
_EXCEPTION = _rx(
    r"\b(?:\w+(?:exception|error)\b|exception|traceback|stack ?trace|panic|fatal|segfault|unhandled|"
    r"uncaught|assert\w*)"
)
# Each category needs all of its patterns to match. Database comes first: "connection to postgres
# timed out" is a database-connection failure, the more actionable finding; a bare timeout
# anywhere else is a timeout. (Separate searches instead of one regex with ".*" lookaheads keep
# the cost linear in the message length.)
_CATEGORY_RULES: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...] = (
    ("database_connection", (_DB, _CONNECTION_TROUBLE)),
    ("timeout", (_TIMEOUT,)),
    ("api_error", (_API,)),
    ("exception", (_EXCEPTION,)),
)


def categorize(message: str, template: str | None = None) -> str:
    """The error category: timeout, database_connection, api_error, exception or other."""
    text = message if template is None else f"{message} {template}"
    for name, patterns in _CATEGORY_RULES:
        if all(rx.search(text) for rx in patterns):
            return name
    return "other"


def mine_lines(lines: Iterable[str], config: MinerConfig | None = None) -> list[PatternMatch]:
    """Replay lines through a fresh miner; each match carries its cluster's final template."""
    miner = PatternMiner(config)
    matches = [miner.add(line) for line in lines]
    # Patterns may have merged after a line was assigned: report every line under its final pattern.
    out = []
    for m in matches:
        root = miner._clusters[miner._find(m.pattern_id)]
        out.append(PatternMatch(root.pattern_id, root.template, m.is_new, m.category))
    return out


def write_clusters_csv(matches: Sequence[PatternMatch], path: str | os.PathLike[str]) -> None:
    """Write LineId,EventId,EventTemplate (LineId from 1), the template being each cluster's final one."""
    final = {m.pattern_id: m.template for m in matches}  # later matches carry the more general template
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["LineId", "EventId", "EventTemplate"])
        for i, m in enumerate(matches, start=1):
            writer.writerow([i, m.pattern_id, final[m.pattern_id]])
