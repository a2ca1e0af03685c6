"""Seed 003's `verify_callback_signature` (section "Callback Security"), verbatim, so the
Rust tests check X-Signature with the code a CRM developer copies from the seed.

Usage: verify_x_signature.py SECRET SIGNATURE < body
Exits 0 if the signature is valid, 3 if it is not (1 is Python's own exit on a crash).
"""
import hashlib
import hmac
import sys


def verify_callback_signature(payload, signature, secret):
    """Verify callback signature"""
    expected_signature = hmac.new(
        secret.encode('utf-8'),
        payload.encode('utf-8'),
        hashlib.sha256
    ).hexdigest()
    
    return hmac.compare_digest(signature, expected_signature)


# As Flask's `request.get_data(as_text=True)` in the seed: the raw body decoded as UTF-8.
payload = sys.stdin.buffer.read().decode('utf-8')
sys.exit(0 if verify_callback_signature(payload, sys.argv[2], sys.argv[1]) else 3)
