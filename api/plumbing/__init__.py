"""HTTP plumbing that knows no model: keys, body limits, the request head's bounds, request
ids and access lines, redirects, error shapes and request metrics."""
