from moby.cli import app

app()
