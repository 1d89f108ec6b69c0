"""Telephony carriers behind one protocol: the simulator (default), Plivo, Twilio."""
