import subprocess
import sys
from pathlib import Path


def test_package_imports_before_django_is_configured():
    code = (
        "import convex_scheduler, convex_scheduler.registry\n"
        "from convex_scheduler import mutation\n"
        "@mutation\n"
        "def f(ctx):\n"
        "    pass\n"
        "print(convex_scheduler.registry.registry.get('__main__:f').name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "__main__:f"
