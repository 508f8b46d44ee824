"""facenet-harness: conformance, accuracy and performance gate for FaceNet inference engines."""
