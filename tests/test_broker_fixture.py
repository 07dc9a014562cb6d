"""The broker fixture is a real Mosquitto that delivers retained messages and QoS 1."""

import paho.mqtt.client as mqtt

from tests.mqtt_helpers import Recorder


def test_real_broker_delivers_retained_and_qos1(broker):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish("safecity/v1/s/n/status", b"x", qos=1, retain=True).wait_for_publish(5)
    rec = Recorder(broker.host, broker.port, "safecity/#")
    msgs = rec.wait_for(lambda m: len(m) >= 1, timeout=5)
    assert msgs[0].retain and msgs[0].payload == b"x"
    pub.loop_stop()
    rec.close()


def test_a_persistent_broker_keeps_a_durable_session_over_a_restart():
    # What the outage tests rely on: QoS 1 messages published while the consumer is away
    # (here: before it is back after the broker's restart) are queued for it.
    import paho.mqtt.publish as publish

    from sim.broker import MosquittoBroker

    with MosquittoBroker(persistence=True) as b:
        rec = Recorder(b.host, b.port, "t/#", client_id="platform", persistent=True)
        publish.single("t/1", "a", qos=1, hostname=b.host, port=b.port)
        rec.wait_for(lambda m: len(m) >= 1, timeout=5)
        b.stop()
        b.start()
        publish.single("t/2", "b", qos=1, hostname=b.host, port=b.port)
        msgs = rec.wait_for(lambda m: len(m) >= 2, timeout=15)
        assert [m.payload for m in msgs] == [b"a", b"b"]
        rec.close()
