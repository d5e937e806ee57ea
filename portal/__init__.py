"""The customer portal: server-rendered pages where an organization's developers see and fix
their webhooks, in one environment, behind a one-time link made with the API."""
