-- dbopt_index_history: every index the advisor created in apply mode (or refused to create),
-- with what it was for, its cost estimate, the measured medians and why it was kept or dropped.
-- The advisor's CLI runs this same file (compiled in, see CMakeLists.txt) on databases that are
-- not ours, in apply mode only: it must stay one idempotent statement.
CREATE TABLE IF NOT EXISTS dbopt_index_history (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    table_name  text NOT NULL,
    index_name  text NOT NULL,
    index_sql   text NOT NULL,
    queries     jsonb NOT NULL DEFAULT '[]',
    cost_before double precision,
    cost_after  double precision,
    ms_before   double precision,
    ms_after    double precision,
    kept        boolean NOT NULL,
    reason      text NOT NULL
);
