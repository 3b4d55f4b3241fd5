"""The Gradio demo: a chat with images, thinking and feedback, a client of the gateway over HTTP only."""
