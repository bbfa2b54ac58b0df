-- A budget is one org's: two orgs may each budget their own team, user or
-- key of the same id. Until now one budget per subject id and period
-- existed across orgs, so an admin of one org setting "team alpha" replaced
-- another org's budget of its team alpha. Budgets without an org (set
-- before budgets belonged to orgs, or by `tollgate budgets set` without
-- --org) stay one per subject and period; they judge the subject's calls in
-- every org.
ALTER TABLE budgets DROP CONSTRAINT IF EXISTS budgets_subject_kind_subject_id_period_key;
CREATE UNIQUE INDEX IF NOT EXISTS budgets_org_subject_period
    ON budgets ((COALESCE(org_id, '')), subject_kind, subject_id, period);
