# nothing here
# escape=`

# still nothing
