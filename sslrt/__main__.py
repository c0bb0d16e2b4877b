from sslrt.cli import main

main()
