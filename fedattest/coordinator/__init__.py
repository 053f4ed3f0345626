"""The attested coordinator: federation policy, activation, identities, tokens and an audit log."""
