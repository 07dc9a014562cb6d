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
