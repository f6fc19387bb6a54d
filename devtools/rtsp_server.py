"""A loopback RTSP server that serves a video file as live cameras (GStreamer).

Run by Debian's ``/usr/bin/python3`` (the ``gi`` bindings come from Debian
packages, not from the virtualenv); ``devtools.rtsp`` starts and stops it.
It imports nothing of FleetSight.

One producer decodes the file once, at the given rate, looped; every mount
``/cam0`` .. ``/cam<n-1>`` is a shared media that encodes it once (H.264,
x264 ultrafast, a key frame every second) for all of its clients, as an IP
camera's stream would be. Prints ``ready <port>`` on stdout once it serves.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mounts", type=int, default=1)
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args()
    Gst.init(None)

    caps = f"video/x-raw,format=I420,framerate={args.fps}/1"
    producer = Gst.parse_launch(
        f"filesrc location={args.video} ! decodebin ! videoconvert ! videorate ! {caps} "
        "! intervideosink channel=src sync=true"
    )

    def on_message(bus, message):
        if message.type == Gst.MessageType.EOS:  # loop the clip
            producer.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif message.type == Gst.MessageType.ERROR:
            print(f"producer error: {message.parse_error()}", file=sys.stderr, flush=True)
            loop.quit()
        return True

    bus = producer.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    producer.set_state(Gst.State.PLAYING)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for i in range(args.mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f"( intervideosrc channel=src ! {caps} ! queue ! x264enc tune=zerolatency speed-preset=ultrafast "
            f"key-int-max={args.fps} threads=1 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        factory.set_shared(True)
        mounts.add_factory(f"/cam{i}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    print(f"ready {args.port}", flush=True)
    loop = GLib.MainLoop()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
