def test_create_then_retrieve(api):
    created = api.create_endpoint("https://example.com/md/webhooks")
    r = api.get(f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}")
    assert r.status_code == 200, r.content
    print(r.json(), dict(r.headers))
