-- Budgets that hold (docs/budgets.md). A budget is a fact set by budget.set/budget.removed
-- (keys projection); spend per scope and period is kept by the usage projection in its
-- batch transaction; reservations are leases a gateway process takes in chunks.

CREATE TABLE budgets (
    scope             text PRIMARY KEY,            -- key:<api_key_id> | owner:<name>
    limit_usd         numeric NOT NULL CHECK (limit_usd >= 0),
    period            text NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
    timezone          text NOT NULL,
    alert_thresholds  integer[] NOT NULL,
    updated_at        timestamptz NOT NULL
);

-- The start of the calendar period holding `at` in `tz`; a week starts on Monday (ISO), and
-- `total` has one period that never resets. ledger/budgets.py:period_start says the same.
CREATE FUNCTION budget_period_start(period text, tz text, at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE period
        WHEN 'total' THEN timestamptz '1970-01-01 00:00:00+00'
        ELSE date_trunc(period, at AT TIME ZONE tz) AT TIME ZONE tz
    END
$$;

-- Settled spend per scope and period, from the projected usage. A new period has no row
-- until spend arrives: it starts at zero by construction, no reset job.
CREATE TABLE budget_spend (
    scope         text NOT NULL,
    period        text NOT NULL,
    period_start  timestamptz NOT NULL,
    spent         numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, period, period_start)
);

-- Allowances leased by gateway processes. Outstanding = amount - settled - returned while
-- the lease lives; a lease is taken only if spent + outstanding of live leases + amount
-- stays within the limit (budget_lease below). `settled` grows by each hold's estimate
-- when the usage projection applies the event that carries the hold; `overrun` by what the
-- actual cost exceeded the estimate (the only possible overspend).
CREATE TABLE budget_leases (
    lease_id      uuid PRIMARY KEY,
    scope         text NOT NULL,
    period        text NOT NULL,
    period_start  timestamptz NOT NULL,
    amount        numeric NOT NULL CHECK (amount >= 0),
    settled       numeric NOT NULL DEFAULT 0,
    returned      numeric NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX budget_leases_ceiling ON budget_leases (scope, period, period_start, expires_at);

-- Measured overspend: a settled hold whose actual cost passed its estimate.
CREATE TABLE budget_overruns (
    scope         text NOT NULL,
    period        text NOT NULL,
    period_start  timestamptz NOT NULL,
    overrun_usd   numeric NOT NULL DEFAULT 0,
    holds         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, period, period_start)
);

-- Thresholds crossed: one row per scope, period and threshold, ever (the primary key is the
-- exactly-once). Written in the transaction that moved spend across the threshold.
CREATE TABLE budget_alerts (
    scope         text NOT NULL,
    period        text NOT NULL,
    period_start  timestamptz NOT NULL,
    threshold     integer NOT NULL,
    limit_usd     numeric NOT NULL,
    spent         numeric NOT NULL,
    event_id      uuid NOT NULL UNIQUE,
    crossed_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (scope, period, period_start, threshold)
);
CREATE INDEX budget_alerts_unpublished ON budget_alerts (crossed_at) WHERE published_at IS NULL;

-- Lease an allowance for one ceiling in one round trip. Locks the ceiling's spend row, so
-- concurrent leases of the same ceiling queue here, and each statement below sees the
-- ones committed before it (read committed: a fresh snapshot per statement in plpgsql).
-- The amount is `wanted`, shrunk to an eighth of the headroom near the cap, but never below
-- `estimate`; none (lease_id NULL) when even `estimate` does not fit. `give_back` returns
-- what is left of the caller's earlier leases (any ceiling) in the same trip.
CREATE FUNCTION budget_lease(
    p_scope text, p_period text, p_period_start timestamptz, p_limit numeric,
    p_estimate numeric, p_wanted numeric, p_ttl interval,
    p_give_back uuid[], p_give_back_amounts numeric[],
    OUT lease_id uuid, OUT amount numeric, OUT spent numeric, OUT outstanding numeric)
LANGUAGE plpgsql AS $$
DECLARE
    headroom numeric;
BEGIN
    UPDATE budget_leases l SET returned = l.returned + g.amount
    FROM unnest(p_give_back, p_give_back_amounts) AS g(lease_id, amount)
    WHERE l.lease_id = g.lease_id;
    INSERT INTO budget_spend (scope, period, period_start) VALUES (p_scope, p_period, p_period_start)
    ON CONFLICT DO NOTHING;
    SELECT s.spent INTO spent FROM budget_spend s
    WHERE s.scope = p_scope AND s.period = p_period AND s.period_start = p_period_start
    FOR UPDATE;
    -- Leases expired a day ago hold nothing and settle nothing worth keeping.
    DELETE FROM budget_leases l
    WHERE l.scope = p_scope AND l.period = p_period AND l.period_start = p_period_start
      AND l.expires_at < clock_timestamp() - interval '1 day';
    SELECT coalesce(sum(greatest(l.amount - l.settled - l.returned, 0)), 0) INTO outstanding
    FROM budget_leases l
    WHERE l.scope = p_scope AND l.period = p_period AND l.period_start = p_period_start
      AND l.expires_at > clock_timestamp();
    headroom := p_limit - spent - outstanding;
    IF headroom < p_estimate OR p_estimate < 0 THEN
        lease_id := NULL;
        amount := 0;
        RETURN;
    END IF;
    amount := greatest(p_estimate, least(p_wanted, headroom / 8));
    lease_id := gen_random_uuid();
    INSERT INTO budget_leases (lease_id, scope, period, period_start, amount, expires_at)
    VALUES (lease_id, p_scope, p_period, p_period_start, amount, clock_timestamp() + p_ttl);
    outstanding := outstanding + amount;
END
$$;
