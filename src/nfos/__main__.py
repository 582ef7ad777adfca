from nfos.cli import main

main()
