"""Federated multinomial logistic regression on the digits data (numpy only)."""
