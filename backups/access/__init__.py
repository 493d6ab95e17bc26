"""Who may do what: login modes, roles, the one permission check and the audit trail."""
