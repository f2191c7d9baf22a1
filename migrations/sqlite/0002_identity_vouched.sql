-- Whether the IdP that asserted an identity's email had verified it AND was trusted for its
-- domain (`[[idp]] trusted_email_domains`). A verified sign-in links into an existing user
-- only if every identity that user already has was vouched for: an account first made by an
-- untrusted or unverified sign-in may be someone squatting the address. NULL for identities
-- from before this column existed, which fall back to `email_verified`.
ALTER TABLE identities ADD COLUMN vouched BOOLEAN;
