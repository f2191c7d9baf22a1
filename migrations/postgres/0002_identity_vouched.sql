-- Whether the IdP that asserted an identity's email had verified it AND was trusted for its
-- domain (`[[idp]] trusted_email_domains`). A verified sign-in links into an existing user
-- only if every identity that user already has was vouched for: an account first made by an
-- untrusted or unverified sign-in may be someone squatting the address. NULL for identities
-- from before this column existed counts as not vouched: their verification may have been for
-- a Unicode lookalike (addresses were Unicode-lower-cased then) or by an untrusted IdP.
ALTER TABLE identities ADD COLUMN vouched BOOLEAN;
