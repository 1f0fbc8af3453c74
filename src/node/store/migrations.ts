/**
 * Ordered schema migrations. Entry i takes a database from `user_version` i to i + 1. Append only:
 * never edit or reorder an entry that has shipped, because databases in the field have run it.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the model catalog (what is on this machine's disk)
  `
  CREATE TABLE models (
    id             TEXT PRIMARY KEY,
    ref            TEXT NOT NULL UNIQUE,
    alias          TEXT UNIQUE,
    name           TEXT NOT NULL,
    path           TEXT NOT NULL,
    bytes          INTEGER NOT NULL CHECK (bytes >= 0),
    sha256         TEXT,
    architecture   TEXT NOT NULL,
    quantization   TEXT NOT NULL,
    context_length INTEGER NOT NULL,
    added_at       INTEGER NOT NULL,
    last_used_at   INTEGER,
    source         TEXT NOT NULL CHECK (source IN ('download', 'local', 'demo'))
  ) STRICT;
  `,
  // 2: observed memory of workers per model and shape, which admission prefers to estimates
  `
  CREATE TABLE model_memory (
    model_id        TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    context_size    INTEGER NOT NULL,
    slots           INTEGER NOT NULL,
    observed_bytes  INTEGER NOT NULL CHECK (observed_bytes > 0),
    estimated_bytes INTEGER NOT NULL,
    observed_at     INTEGER NOT NULL,
    PRIMARY KEY (model_id, context_size, slots)
  ) STRICT;
  `,
  // 3: the worker catalog: which backends this machine can run, with their build
  `
  CREATE TABLE backends (
    name        TEXT PRIMARY KEY,
    available   INTEGER NOT NULL CHECK (available IN (0, 1)),
    binary      TEXT,
    devices     TEXT NOT NULL,
    build       TEXT NOT NULL,
    detected_at INTEGER NOT NULL
  ) STRICT;
  `,
  // 4: what the cluster layer keeps across restarts: the election's term and vote, known members
  `
  CREATE TABLE cluster_store (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  ) STRICT;
  `,
  // 5: API keys for clients beyond this machine; only their sha256 is kept
  `
  CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
  ) STRICT;
  `,
  // 6: every job this node accepted, from acceptance to its end: a job never vanishes, and one
  // unfinished at a restart is marked failed with the reason
  `
  CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    model             TEXT NOT NULL,
    owner             TEXT,
    state             TEXT NOT NULL
                      CHECK (state IN ('queued', 'placing', 'running', 'done', 'failed', 'cancelled')),
    hive              TEXT,
    hive_name         TEXT,
    worker            TEXT,
    reason            TEXT,
    accepted_at       INTEGER NOT NULL,
    started_at        INTEGER,
    first_token_at    INTEGER,
    finished_at       INTEGER,
    completion_tokens INTEGER,
    error_code        TEXT,
    error_message     TEXT
  ) STRICT;
  CREATE INDEX jobs_accepted ON jobs (accepted_at);
  `,
  // 7: API keys replicated through the cluster: per-key limits, revocations kept as tombstones
  // (so a revoked key cannot come back from a node that missed the revocation), and the version of
  // the key set this node last took from its queen
  `
  ALTER TABLE api_keys ADD COLUMN max_concurrent INTEGER CHECK (max_concurrent > 0);
  ALTER TABLE api_keys ADD COLUMN rpm INTEGER CHECK (rpm > 0);
  ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
  CREATE TABLE api_key_set (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    term    INTEGER NOT NULL,
    queen   TEXT NOT NULL
  ) STRICT;
  `,
  // 8: names a user gave to models (`rbee models alias NAME REF`): each stands for a canonical ref,
  // which need not be on this node's disk (another hive's model, or one to download)
  `
  CREATE TABLE model_aliases (
    name       TEXT PRIMARY KEY,
    ref        TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;
  `,
  // 9: the sha256 of each fixed-size piece of a shared model file, by the file's content, computed
  // in the pass that checked the whole file against its catalog sha256: other hives check every
  // piece they fetch against it
  `
  CREATE TABLE model_pieces (
    sha256      TEXT NOT NULL,
    piece_bytes INTEGER NOT NULL CHECK (piece_bytes > 0),
    hashes      TEXT NOT NULL,
    PRIMARY KEY (sha256, piece_bytes)
  ) STRICT;
  `,
  // 10: the worker catalog's workers: each worker this hive started, recorded when it became ready,
  // with the llama.cpp binary it runs and why that one (the prebuilt or the native build)
  `
  CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    model        TEXT NOT NULL,
    backend      TEXT NOT NULL,
    device       INTEGER NOT NULL,
    pid          INTEGER NOT NULL,
    binary_kind  TEXT CHECK (binary_kind IN ('native', 'prebuilt', 'localBuild')),
    binary_label TEXT,
    binary_why   TEXT,
    ready_at     INTEGER NOT NULL,
    exited_at    INTEGER
  ) STRICT;
  CREATE INDEX workers_ready ON workers (ready_at);
  `,
];
