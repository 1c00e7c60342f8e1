-- Platform schema of the SaaSOdoo control-plane database, as seeded on the local test bed.
-- Applied by testbed/services.sh on every `up` (as the role saasodoo, so it owns the tables):
-- every statement is idempotent, and existing rows are never overwritten, so state left by a
-- runbook or a test survives a re-seed.

CREATE TABLE IF NOT EXISTS tenants (
    id                serial PRIMARY KEY,
    slug              text NOT NULL UNIQUE,
    tier              text NOT NULL CONSTRAINT tenants_tier_check
                          CHECK (tier IN ('basic', 'premium')),
    status            text NOT NULL CONSTRAINT tenants_status_check
                          CHECK (status IN ('pending', 'provisioning', 'active', 'failed')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    last_error        text
);
CREATE INDEX IF NOT EXISTS tenants_status_idx ON tenants (status, status_changed_at);

CREATE TABLE IF NOT EXISTS users (
    id         serial PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    tenant_id  integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS users_tenant_id_idx ON users (tenant_id);

CREATE TABLE IF NOT EXISTS subscriptions (
    id         serial PRIMARY KEY,
    tenant_id  integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    plan       text NOT NULL,
    status     text NOT NULL CONSTRAINT subscriptions_status_check
                   CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_tenant_plan_key UNIQUE (tenant_id, plan)
);

CREATE TABLE IF NOT EXISTS audit_log (
    id        bigserial PRIMARY KEY,
    tenant_id integer REFERENCES tenants (id) ON DELETE SET NULL,
    action    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS audit_log_tenant_at_idx ON audit_log (tenant_id, at);

-- Seed data: the three tenants of inventories/local/group_vars/all/platform.yml.
INSERT INTO tenants (slug, tier, status) VALUES
    ('acme',    'premium', 'active'),
    ('globex',  'basic',   'active'),
    ('initech', 'basic',   'active')
ON CONFLICT (slug) DO NOTHING;

INSERT INTO users (email, tenant_id)
SELECT u.email, t.id
FROM (VALUES
        ('admin@acme.example',      'acme'),
        ('wile.e@acme.example',     'acme'),
        ('admin@globex.example',    'globex'),
        ('hank@globex.example',     'globex'),
        ('admin@initech.example',   'initech'),
        ('milton@initech.example',  'initech')
     ) AS u (email, slug)
JOIN tenants t ON t.slug = u.slug
ON CONFLICT (email) DO NOTHING;

INSERT INTO subscriptions (tenant_id, plan, status)
SELECT t.id, s.plan, s.status
FROM (VALUES
        ('acme',    'premium-monthly', 'active'),
        ('globex',  'basic-monthly',   'active'),
        ('initech', 'basic-yearly',    'active')
     ) AS s (slug, plan, status)
JOIN tenants t ON t.slug = s.slug
ON CONFLICT (tenant_id, plan) DO NOTHING;

-- audit_log has no natural key: seed one creation event per tenant, once.
INSERT INTO audit_log (tenant_id, action)
SELECT t.id, 'tenant.created'
FROM tenants t
WHERE t.slug IN ('acme', 'globex', 'initech')
  AND NOT EXISTS (SELECT 1 FROM audit_log a
                  WHERE a.tenant_id = t.id AND a.action = 'tenant.created');
